# Starts a PostgreSQL server for kinesync's tests: a new cluster in a temporary directory, on a
# free loopback port, password authentication for every connection. Prints `LISTENING <port>`
# once the server accepts connections, and stops it (and removes the cluster) when its stdin
# closes, which happens when the test process ends, however it ends.
#
# The server speaks TLS too, with a certificate for 127.0.0.1 signed by a CA made here, whose
# certificate is written to CA_FILE for clients to trust.
#
# usage: python3 postgres_launcher.py BINDIR USER PASSWORD CA_FILE
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

bindir, user, password, ca_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

# initdb and postgres refuse to run as root: run them as a system user.
run_as = {}
tmp = tempfile.mkdtemp(prefix="kinesync-postgres-")
if os.geteuid() == 0:
    name = "postgres"
    try:
        pwd.getpwnam(name)
    except KeyError:
        name = "kinesync-postgres"
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    entry = pwd.getpwnam(name)
    os.chown(tmp, entry.pw_uid, entry.pw_gid)
    run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

data = os.path.join(tmp, "data")
pwfile = os.path.join(tmp, "pwfile")
with open(pwfile, "w") as f:
    f.write(password + "\n")
if run_as:
    os.chown(pwfile, run_as["user"], run_as["group"])
subprocess.run(
    [os.path.join(bindir, "initdb"), "-D", data, "-U", user, "--pwfile", pwfile,
     "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
    check=True, stdout=subprocess.DEVNULL, cwd=tmp, **run_as)
os.remove(pwfile)

# A CA, and a certificate for 127.0.0.1 it signs.
def openssl(*args):
    subprocess.run(["openssl", *args], check=True, cwd=tmp,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
        "-subj", "/CN=kinesync test CA")
openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
with open(os.path.join(tmp, "server.ext"), "w") as f:
    f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "3", "-extfile", "server.ext")
os.chmod(os.path.join(tmp, "server.key"), 0o600)
if run_as:
    for name in ("server.key", "server.crt"):
        os.chown(os.path.join(tmp, name), run_as["user"], run_as["group"])
shutil.copy(os.path.join(tmp, "ca.pem"), ca_file)

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
server = subprocess.Popen(
    [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port), "-k", tmp,
     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
     "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=256MB",
     "-c", "ssl=on", "-c", "ssl_cert_file=" + os.path.join(tmp, "server.crt"),
     "-c", "ssl_key_file=" + os.path.join(tmp, "server.key")],
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "w"), cwd=tmp, **run_as)

deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        break
    except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
            sys.stderr.write(open(os.path.join(tmp, "server.log")).read())
            sys.exit("postgres did not start")
        time.sleep(0.05)
print("LISTENING", port, flush=True)
sys.stdin.read()
server.terminate()
server.wait()
shutil.rmtree(tmp, ignore_errors=True)
os.remove(ca_file)
