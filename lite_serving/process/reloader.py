"""``--reload``: serve from a child process and start it again when the predictor's files change.

The parent runs the command that started it in a child process (which serves
as usual) and every half second compares the modification times and sizes of
the files beside predictor.py, and of the ``.py`` files in the Python
packages below it (standard library only: no inotify). On a change it stops
the child (SIGTERM, then SIGKILL after ``--graceful-timeout`` + 5 s) and starts
a new one. A child that exits by itself, for example on a syntax error just
saved, is started again at the next change. SIGTERM/SIGINT stop the child,
then the parent; SIGHUP restarts the child as a change would.

Files that change while the server runs (hidden files, ``__pycache__``,
``*.pyc``, ``*.log``, editors' swap and backup files) are not watched; a
predictor that writes other files into its own directory should write them
elsewhere.
"""

import os
import signal
import subprocess
import time

from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

POLL = 0.5
KILL_MARGIN = 5.0
IGNORED_SUFFIXES = (".pyc", ".pyo", ".log", ".swp", ".swx", ".tmp", "~")


def _watched(name):
    return not name.startswith(".") and name != "__pycache__" and not name.endswith(IGNORED_SUFFIXES)


def snapshot(directory):
    """``{path: (mtime_ns, size)}`` of the watched files under ``directory``."""
    found = {}

    def scan(folder, top):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            if not _watched(entry.name):
                continue
            try:
                if entry.is_dir():
                    if os.path.isfile(os.path.join(entry.path, "__init__.py")):
                        scan(entry.path, False)  # a package beside predictor.py: its modules
                elif entry.is_file() and (top or entry.name.endswith(".py")):
                    st = entry.stat()
                    found[entry.path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue

    scan(directory, True)
    return found


def changed_files(before, after):
    """Paths added, removed or modified between two snapshots, sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


class Reloader:
    """Runs ``command`` in ``cwd`` with ``env`` and restarts it when ``directory`` changes."""

    def __init__(self, command, cwd, env, directory, graceful_timeout):
        self.command = command
        self.cwd = cwd
        self.env = env
        self.directory = directory
        self.graceful_timeout = graceful_timeout
        self.child = None
        self.stopping = False
        self.restart = False

    def _on_signal(self, _signum, _frame):
        self.stopping = True

    def _on_hangup(self, _signum, _frame):
        self.restart = True

    def _start(self):
        self.child = subprocess.Popen(self.command, cwd=self.cwd, env=self.env)

    def _stop_child(self):
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.graceful_timeout + KILL_MARGIN)
        except subprocess.TimeoutExpired:
            log.error("the server (pid %d) did not stop in time; killing it", child.pid)
            child.kill()
            child.wait()

    def run(self):
        """Until SIGTERM/SIGINT; returns the exit status."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        log.info("--reload: watching %s (the files beside predictor.py and the Python packages "
                 "below it); pid %d restarts the server when they change", self.directory,
                 os.getpid())
        files = snapshot(self.directory)
        self._start()
        reported_exit = False
        try:
            while not self.stopping:
                time.sleep(POLL)
                if self.stopping:
                    break
                if self.child is not None and self.child.poll() is not None and not reported_exit:
                    log.error("the server exited with status %d; it starts again when a watched "
                              "file changes", self.child.returncode)
                    reported_exit = True
                now = snapshot(self.directory)
                changed = changed_files(files, now)
                if self.restart:
                    self.restart = False
                    log.info("SIGHUP: restarting the server")
                elif not changed:
                    continue
                else:
                    shown = ", ".join(os.path.relpath(p, self.directory) for p in changed[:3])
                    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
                    log.info("%s%s changed; restarting the server", shown, more)
                files = now
                self._stop_child()
                self._start()
                reported_exit = False
        finally:
            self._stop_child()
        log.info("--reload: stopped")
        return 0
