"""The fixtures of the mount tests, as thin wrappers around tests/harness.py
(where the helpers are: test modules import them from harness, not from
here).

- session_dovecot, account: one private Dovecot for the session, with a
  populated account (harness.populate) and three messages for carol.
- mount: a factory mounting the real mailfs binary (harness.MountFactory);
  a crash, a non-zero exit or a sanitizer report fails the test.
- servers: private Dovecots of one test module (harness.PrivateServers),
  one per configuration, started on first use; the module may name
  configurations in SERVER_KINDS.
- private_dovecot: a small Dovecot of the test's own, for tests that stop it.
"""

import os
import sys

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

pytest.register_assert_rewrite("harness")

import harness  # noqa: E402
import sample_mail  # noqa: E402


@pytest.fixture(scope="session")
def session_dovecot():
    with harness.PrivateServers(prefix="mailfs-it-", users=harness.USERS) as servers:
        yield servers.get()


@pytest.fixture(scope="session")
def account(session_dovecot):
    acct = harness.populate(session_dovecot)
    harness.append_samples(session_dovecot, "INBOX",
                           sample_mail.sample_messages(3, 9, tricky=False), 9, user="carol")
    # Snapshot what the tests compare with, before any mount touches the account.
    for f in acct.selectable():
        acct.meta(f)
    return acct


@pytest.fixture
def corpus_folder(account):
    if harness.CORPUS_FOLDER not in account.generated:
        pytest.skip("corpus not found (set CORPUS_DIR or put it at ../shared/corpus)")
    return harness.CORPUS_FOLDER


@pytest.fixture
def mount(tmp_path, account, session_dovecot):
    """A factory: mount(url=None, options=(), env=None, cache_dir=None,
    foreground=True, server=None, ...) -> Mount.  Everything is unmounted at
    teardown; a crash, a non-zero exit or a sanitizer report fails the test."""
    with harness.checked_mounts(tmp_path, session_dovecot) as factory:
        yield factory


@pytest.fixture(scope="module")
def servers(request):
    """harness.PrivateServers for one test module (in /tmp/mailfs-<module>-*),
    stopped after the module: servers.get(capability=…, quota_storage_kb=…,
    extra_conf=…), or servers.get(kind) for a kind named in the module's
    SERVER_KINDS ({kind: config})."""
    prefix = "mailfs-%s-" % request.module.__name__.split(".")[-1].replace("test_", "", 1)
    with harness.PrivateServers(prefix=prefix,
                                kinds=getattr(request.module, "SERVER_KINDS", None)) as s:
        yield s


@pytest.fixture
def private_dovecot(mount):
    """A fresh small Dovecot (harness.populate_small) for tests that stop the
    server.  Stopped after the test's mounts are unmounted."""
    dc = mount.private_server()
    harness.populate_small(dc)
    return dc
