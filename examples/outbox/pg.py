"""A private PostgreSQL cluster in a directory, for the example and its
test: initdb, then pg_ctl start/stop, listening only on a Unix socket in
the directory.  PostgreSQL refuses to run as root, so as root it runs as
the `postgres` user that Debian's postgresql package creates."""
import glob
import os
import shutil
import subprocess

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:] or [""]


def _run(*argv):
    argv = [os.path.join(BIN[0], argv[0]), *argv[1:]]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class Cluster:
    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        self.data = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.dsn = f"host={self.socket} user=postgres dbname=postgres"

    def init(self):
        os.makedirs(self.socket)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.socket, "postgres")
        _run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self):
        _run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "postgres.log"), "-w",
             "-o", f"-k {self.socket} -c listen_addresses='' -c fsync=off", "start")

    def stop(self):
        _run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
