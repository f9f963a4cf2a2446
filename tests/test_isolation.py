"""Hostile steps through the real sandbox: each is contained, and the earlier steps' state survives it.

Every test runs real code in the real kernel under the real isolation (bubblewrap: `scripts/run.sh test` installs
it). Where a check could pass for the wrong reason, a control shows that the same code does work when allowed
(a file written in the working directory, a connection with ``network=True``).
"""
import os
import signal
import socket
import textwrap
import threading
import time
import warnings

import pytest
from pathlib import Path

from convsynth import isolation
from convsynth.isolation import MAX_FILE_SIZE, MAX_PROCESSES, Isolation, IsolationError, tree_usage
from convsynth.sandbox import Sandbox

needs_isolation = pytest.mark.skipif(isolation.detect() != "bwrap", reason=f"no isolation: {isolation.detect()}")


@pytest.fixture(scope="module")
def sb():
    """One isolated sandbox for the module, holding state from an earlier step."""
    with Sandbox(timeout=30) as box:
        assert box.run("x = 41").ok
        yield box


def intact(box: Sandbox) -> None:
    r = box.run("print(x + 1)")
    assert r.ok and r.stdout == "42\n", (r.status, r.error, r.note)


def step(box: Sandbox, code: str, **kw):
    return box.run(textwrap.dedent(code), **kw)


@needs_isolation
def test_is_isolated_and_says_so(sb):
    assert sb.isolation.active and "no network" in sb.isolation.describe()
    r = step(sb, "import os\nprint(os.getpid(), sorted(os.listdir('/')))")
    pid, listing = r.stdout.split(" ", 1)
    assert int(pid) < 10  # a PID namespace of its own: the kernel is one of its first processes
    assert "'home'" not in listing and "'usr'" in listing


@needs_isolation
def test_cannot_delete_or_overwrite_a_file_outside_the_workdir(sb, tmp_path):
    planted = tmp_path / "precious.txt"
    planted.write_text("precious")
    r = step(sb, f"""
        import os
        errors = []
        for attempt in (lambda: os.remove({str(planted)!r}), lambda: open({str(planted)!r}, "w").write("gone")):
            try:
                attempt()
            except OSError as e:
                errors.append(type(e).__name__)
        open("inside.txt", "w").write("written")   # the working directory stays writable
        print(errors)
    """)
    assert r.ok and r.stdout.strip() == "['FileNotFoundError', 'FileNotFoundError']"  # not even visible
    assert planted.read_text() == "precious"
    assert open(os.path.join(sb.workdir, "inside.txt")).read() == "written"
    intact(sb)


@needs_isolation
def test_cannot_read_credentials_in_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = SECRET-IN-HOME")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("SECRET-KEY")
    monkeypatch.setenv("HOME", str(home))
    with Sandbox() as box:
        assert box.run("x = 41").ok
        paths = ["~/.aws/credentials", str(home / ".aws" / "credentials"), str(home / ".ssh" / "id_ed25519")]
        r = step(box, f"""
            import os, glob
            found = []
            for path in {paths!r}:
                try:
                    found.append(open(os.path.expanduser(path)).read())
                except OSError as e:
                    found.append(type(e).__name__)
            print(found, glob.glob("/root/.ssh/*") + glob.glob("/home/*/.ssh/*"))
        """)
        assert r.ok, r.error
        assert "SECRET" not in r.stdout and r.stdout.count("FileNotFoundError") == 3
        intact(box)


@needs_isolation
def test_a_session_in_the_home_folder_does_not_hand_over_its_secrets(monkeypatch):
    """A notebook in ~ runs its session with cwd="." = ~, which the sandbox would mount whole and writable. The
    hidden entries of home are covered, home itself is read-only (no new ~/.bash_profile), its visible folders stay
    readable and writable, an import path inside a covered folder and a TMPDIR inside one still work, and the real
    secrets are untouched."""
    import shutil
    import tempfile
    home = Path(tempfile.mkdtemp(prefix="cs-home-"))  # short: the kernel's IPC socket paths live under TMPDIR
    try:
        _home_guard_checks(home, monkeypatch)
    finally:
        shutil.rmtree(home)


def _home_guard_checks(home, monkeypatch):
    import tempfile
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("SECRET-KEY")
    (home / ".netrc").write_text("password SECRET-NETRC")
    (home / "dotfiles").mkdir()
    (home / "dotfiles" / "aws").write_text("SECRET-LINKED")
    (home / ".aws").symlink_to(home / "dotfiles")  # a symlinked dot-folder: what it points to is covered
    (home / ".self").symlink_to(home)              # a hidden link to home itself must not hide the working directory
    (home / "notes.txt").write_text("my notes")
    (home / "proj").mkdir()
    site = home / ".local" / "lib" / "site"        # a user site-packages on the import path
    site.mkdir(parents=True)
    (site / "homemod_xyz.py").write_text("VALUE = 'imported from ~/.local'\n")
    (home / ".cache" / "t").mkdir(parents=True)    # TMPDIR under home, as on many clusters
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setattr(tempfile, "tempdir", str(home / ".cache" / "t"))
    with pytest.warns(UserWarning, match="holds your home folder"):  # said once, with what to do
        box = Sandbox(cwd=str(home))
    with box:
        r = step(box, """
            import os
            found = []
            for path in (".ssh/id_ed25519", ".netrc", ".aws/aws", "dotfiles/aws", "notes.txt"):
                try:
                    found.append(open(path).read())
                except OSError as e:
                    found.append(type(e).__name__)
            refused = []
            for path in (".bash_profile", "made-here.txt", ".ssh/authorized_keys", ".local/lib/site/usercustomize.py"):
                try:
                    open(path, "w").write("planted")
                except OSError as e:
                    refused.append(e.errno)
            open("proj/out.txt", "w").write("written")
            import homemod_xyz
            print(found)
            print(len(refused), homemod_xyz.VALUE)
        """)
        assert r.ok, r.error
        found, refused = r.stdout.splitlines()
        assert "SECRET" not in found and "password" not in found, found
        assert found.startswith("['FileNotFoundError', ") and found.endswith(
            ", 'FileNotFoundError', 'FileNotFoundError', 'my notes']"), found
        assert refused == "3 imported from ~/.local", refused  # .ssh/authorized_keys went to the cover, in memory
    # the covers were stand-ins: the real files are as they were, nothing was planted, the folder write went through
    assert (home / ".ssh" / "id_ed25519").read_text() == "SECRET-KEY"
    assert (home / ".netrc").read_text() == "password SECRET-NETRC"
    assert not any((home / p).exists() for p in (".bash_profile", "made-here.txt", ".ssh/authorized_keys"))
    assert sorted(p.name for p in site.iterdir()) == ["homemod_xyz.py"]
    assert (home / "proj" / "out.txt").read_text() == "written"
    # control: a working directory that does not hold home is mounted as it is (dot entries included, writable)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        box = Sandbox(cwd=str(home / "dotfiles"))
    assert not [w for w in said if "home folder" in str(w.message)]
    with box:
        r = step(box, "print(open('aws').read()); open('.hidden', 'w').write('ok')")
        assert r.ok and r.stdout == "SECRET-LINKED\n", (r.error, r.stdout)
    assert (home / "dotfiles" / ".hidden").read_text() == "ok"


@needs_isolation
def test_cannot_connect_to_a_listener_on_localhost():
    server = socket.create_server(("127.0.0.1", 0))
    port, accepted = server.getsockname()[1], []

    def accept():
        server.settimeout(20)
        try:
            while True:
                conn, _ = server.accept()
                accepted.append(conn.recv(100))
                conn.close()
        except OSError:
            pass
    threading.Thread(target=accept, daemon=True).start()
    code = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"hello")
            print("connected")
        except OSError as e:
            print(type(e).__name__)
    """
    try:
        with Sandbox() as box:
            assert box.run("x = 41").ok
            r = step(box, code)
            assert r.ok and r.stdout.strip() in ("ConnectionRefusedError", "OSError", "TimeoutError")
            intact(box)
        assert accepted == []
        with Sandbox(network=True) as box:  # the control: allowed, the same step connects
            assert "network allowed" in box.isolation.describe()
            assert step(box, code).stdout.strip() == "connected"
        for _ in range(100):
            if accepted:
                break
            time.sleep(0.05)
        assert accepted == [b"hello"]
    finally:
        server.close()


@needs_isolation
def test_fork_bomb_is_bounded(sb):
    r = step(sb, """
        import os, time
        me = os.getpid()
        while True:                     # every child forks too: the classic bomb
            try:
                os.fork()
            except OSError:
                if os.getpid() != me:
                    time.sleep(600)     # a child at the limit waits (instead of spinning) until cleaned up
                raise
    """)
    assert r.status == "error" and "BlockingIOError" in r.error, (r.status, r.error, r.note)
    data, rss, processes = tree_usage(sb.pid)
    assert processes <= MAX_PROCESSES + 2  # bubblewrap's processes are counted in the cgroup too, if there is one
    sb.restart()  # the parked children fill the limit (the kernel cannot start a thread): a restart clears them
    intact(sb)


@needs_isolation
def test_a_10_gb_write_stops_at_the_file_size_limit(sb):
    r = step(sb, """
        import os
        chunk, written = b"x" * 2**26, 0
        try:
            with open("big.bin", "wb") as f:
                while written < 10 * 2**30:
                    f.write(chunk)
                    written += len(chunk)
        except OSError as e:
            print(type(e).__name__, e.errno)
        print(os.path.getsize("big.bin"))
        os.remove("big.bin")
    """)
    assert r.ok, r.error
    err, size = r.stdout.splitlines()
    assert err == "OSError 27" and int(size) <= MAX_FILE_SIZE  # EFBIG: RLIMIT_FSIZE
    intact(sb)


def _marked(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(int(pid))
        except OSError:
            pass
    return found


@needs_isolation
def test_a_background_child_in_its_own_session_ends_with_the_sandbox(sb):
    marker = f"convsynth-escapee-{os.getpid()}"
    r = step(sb, f"""
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", {marker!r}],
                                 start_new_session=True)   # os.setsid(): out of the kernel's process group
        print(os.getsid(child.pid) != os.getsid(0))
    """)
    assert r.ok and r.stdout == "True\n", r.error
    escapee = _marked(marker)
    assert len(escapee) == 1  # it outlived the step
    # The kernel goes, and its namespace with it: nothing it started is left. (Not replaying that step, which
    # would start another one.)
    sb.restart(replay=[code for code in sb.history if marker not in code])
    for _ in range(100):
        if not _marked(marker):
            break
        time.sleep(0.05)
    assert _marked(marker) == []
    intact(sb)


@needs_isolation
def test_cannot_kill_the_parent_process(sb):
    r = step(sb, f"""
        import os, signal
        results = []
        for pid in ({os.getpid()}, os.getppid()):
            try:
                os.kill(pid, signal.SIGKILL)
                results.append("sent")
            except OSError as e:
                results.append(type(e).__name__)
        print(results)
    """)
    # Our pid does not exist in its namespace; its parent there is bubblewrap's init, which ignores the signal.
    assert r.ok and r.stdout.startswith("['ProcessLookupError',"), (r.stdout, r.error)
    intact(sb)


@needs_isolation
def test_cannot_write_to_etc(sb):
    r = step(sb, """
        try:
            open("/etc/convsynth-was-here", "w").write("x")
            print("written")
        except OSError as e:
            print(type(e).__name__, e.errno)
    """)
    assert r.ok and r.stdout.strip() in ("OSError 30", "PermissionError 13")  # read-only file system
    assert not os.path.exists("/etc/convsynth-was-here")
    intact(sb)


def test_secrets_in_the_environment_stay_out(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET-1")
    monkeypatch.setenv("CONVSYNTH_TEST_API_TOKEN", "SECRET-2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with Sandbox(env={"GIVEN": "yes"}) as box:
        assert box.run("x = 41").ok
        r = step(box, "import os\nprint(sorted(os.environ.items()))")
        assert r.ok and "SECRET" not in r.stdout
        assert "('GIVEN', 'yes')" in r.stdout and "('OMP_NUM_THREADS', '1')" in r.stdout  # allowed ones do pass
        intact(box)


def test_strict_refuses_where_isolation_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH: as on a machine without bubblewrap
    isolation.detect.cache_clear()
    try:
        with pytest.raises(IsolationError, match="bubblewrap is not installed.*isolation='auto'"):
            Isolation("strict")
        monkeypatch.setattr(isolation, "_warned", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loose = Isolation("auto")
            Isolation("auto")
        assert not loose.active and loose.prefix("/w", "/p") == [] and len(caught) == 1  # said once
        assert "WITHOUT isolation" in str(caught[0].message)
        assert loose.describe().startswith("not isolated: bubblewrap is not installed")
    finally:
        isolation.detect.cache_clear()
    assert Isolation("off").describe() == "not isolated: turned off (isolation='off')"
    with pytest.raises(ValueError):
        Isolation("sometimes")


def test_session_keeps_and_shows_its_isolation(tmp_path):
    import convsynth
    from convsynth.session import Session
    cg = convsynth.load()
    with pytest.raises(ValueError):
        Session(cg, isolation="sometimes")
    off = Session(cg, isolation="off")
    assert "not isolated: turned off" in repr(off)
    s = Session(cg, preamble="", network=True)
    assert s.isolation_info == isolation.describe("auto", True)
    assert f"sandbox {s.isolation_info}" in repr(s) and s.isolation_info in s.widget().isolation.value
    back = Session.load(s.save(tmp_path / "s.json"), cg)
    assert (back.network, back.isolation) == (True, "auto")
    if isolation.detect() == "bwrap":
        back.add_code("print('started')")
        assert back.run()[0].stdout == "started\n"
        assert back.isolation_info.startswith("isolated (bubblewrap): network allowed")
        assert back.sandbox.isolation.network is True
    back.close()


@needs_isolation
def test_the_memory_limit_covers_children():
    """Three children of 200 MB each stay under a 400 MiB limit per process but not together."""
    with Sandbox(memory_limit=400 * 2**20, timeout=60) as box:
        assert box.run("x = 41").ok
        r = step(box, """
            import subprocess, sys
            hog = "import time; x = b'x' * (200 * 2**20); time.sleep(3)"
            children = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
            print([c.wait() for c in children])
        """)
        # A memory cgroup kills a child (SIGKILL, -9); without one the watchdog stops the whole kernel.
        assert r.status == "memory" or (r.ok and "-9" in r.stdout), (r.status, r.stdout, r.note)
        intact(box)
