"""Inode numbers come from the cache: every folder and message keeps its
number across an unmount and a remount of the same cache and across
re-checks that find other changes, a moved message gets a number no other
message has, and what backup tools compare to skip unchanged files (inode,
size, ctime: restic, borg) is the same after a remount.

Checked against a private Dovecot of the test's own (changed with imaplib).
"""

import os

import sample_mail
from harness import SEQ, USER, append_samples, listing, run, wait_for


def tree_stats(root):
    """{relative path: (st_ino, st_size, st_ctime, st_mtime)} of every folder
    and message under root (lstat, as tar and restic do)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_size, int(st.st_ctime),
                                             int(st.st_mtime))
    return out


def inos(stats):
    return {k: v[0] for k, v in stats.items()}


def assert_unique(stats):
    seen = {}
    for path, v in stats.items():
        assert v[0] not in seen, "%s and %s share inode %d" % (path, seen[v[0]], v[0])
        assert v[0] > 1, "%s has inode %d" % (path, v[0])
        seen[v[0]] = path


def test_inodes_survive_a_remount(mount, private_dovecot, tmp_path):
    cache = str(tmp_path / "cache")
    m = mount(server=private_dovecot, cache_dir=cache)
    before = tree_stats(m.path)
    assert len(before) >= 12, before
    assert_unique(before)
    assert os.stat(m.path).st_ino == 1
    m.unmount()
    m2 = mount(server=private_dovecot, cache_dir=cache)
    after = tree_stats(m2.path)
    # What restic and borg compare to call a file unchanged: all of it.
    assert after == before, "changed after a remount: %s" % sorted(
        k for k in set(before) | set(after) if before.get(k) != after.get(k))


def test_inodes_survive_a_recheck_with_other_changes(mount, private_dovecot):
    m = mount(server=private_dovecot, options=["refresh=1"])
    before = tree_stats(m.path)
    # Another client: a new message in INBOX, one expunged from Other.
    append_samples(private_dovecot, "INBOX",
                   sample_mail.sample_messages(1, "ino-%d" % next(SEQ), tricky=False), 5)
    with private_dovecot.session(USER) as c:
        c.select("Other")
        c.store("1", "+FLAGS", "(\\Deleted)")
        c.expunge()
    wait_for(lambda: len(listing(m.p("INBOX"))) == 9 and len(listing(m.p("Other"))) == 2, 20,
             what="the re-check to see the other client's changes")
    after = tree_stats(m.path)
    gone = set(before) - set(after)
    new = set(after) - set(before)
    assert len(gone) == 1 and len(new) == 1, (gone, new)
    for path in set(before) & set(after):
        assert after[path][0] == before[path][0], "%s: inode %d, was %d" % (
            path, after[path][0], before[path][0])
    assert_unique(after)
    assert after[new.pop()][0] not in set(inos(before).values())


def test_a_moved_message_gets_a_new_number(mount, private_dovecot):
    m = mount(server=private_dovecot)
    before = tree_stats(m.path)
    name = listing(m.p("INBOX"))[0]
    run(["mv", m.p("INBOX", name), m.p("Other") + "/"])
    after = tree_stats(m.path)
    moved = after[os.path.join("Other", name)][0]
    assert moved not in set(inos(before).values()), \
        "the moved message took inode %d, which another message had" % moved
    assert_unique(after)
    # The others kept theirs.
    for path in set(before) & set(after):
        assert after[path][0] == before[path][0], path
