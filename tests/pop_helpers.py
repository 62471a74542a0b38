"""An independent POP3 client for the tests (Python's poplib), with nothing
of any one server in it: it needs a server object with host, pop3s_port,
ca_file and users ({user: password}), as tests/dovecot.py's Dovecot has.

Every session that reads ends with RSET, so that checking changes nothing
(a server may set \\Seen at QUIT for RETR'd messages otherwise).
"""

import poplib
import ssl

# poplib refuses lines over 2048 bytes; a message may hold longer ones.
poplib._MAXLINE = 1 << 20


def pop_client(server, user="alice", password=None):
    """A poplib.POP3_SSL logged in as user (password: the server's own for
    user unless given), verifying with the server's CA."""
    if password is None:
        password = server.users[user]
    ctx = ssl.create_default_context(cafile=server.ca_file)
    p = poplib.POP3_SSL(server.host, server.pop3s_port, context=ctx, timeout=60)
    p.user(user)
    p.pass_(password)
    return p


def server_state(server, user="alice", password=None, bodies=True):
    """{count, size, uidls, sizes, bodies} by message number (index 0 = message 1)."""
    p = pop_client(server, user, password)
    try:
        count, size = p.stat()
        uidls = [line.split()[1].decode() for line in p.uidl()[1]]
        sizes = [int(line.split()[1]) for line in p.list()[1]]
        data = None
        if bodies:
            data = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
        p.rset()   # leave no \Seen behind
    finally:
        p.quit()
    return {"count": count, "size": size, "uidls": uidls, "sizes": sizes, "bodies": data}
