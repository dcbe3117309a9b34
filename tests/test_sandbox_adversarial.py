"""Hostile code against the sandbox, on every isolation tier this machine can run (CI: both, as root).

Each test asserts the outcome: the attack fails in the sandbox *and* the host is untouched. A tier
is skipped only when it cannot run here, with the probe's reason.
"""

from __future__ import annotations

import ast
import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq

from sandbox import Sandbox, SandboxSettings, fontcache, isolation, tier_problem
from sandbox import kernel as kernel_module

TIERS = ["bwrap", "landlock"]
HOST_SECRET_VAR = "GLM_SANDBOX_TEST_SECRET"


def settings(tier: str, **overrides) -> SandboxSettings:
    values = dict(isolation=tier, memory_mb=1024, max_processes=64, max_file_mb=16, cpu_seconds=120,
                  timeout_s=20, interrupt_grace_s=1.5, output_bytes=4000, pool_size=0, preload=[])
    values.update(overrides)
    return SandboxSettings(**values)


def require(tier: str) -> None:
    problem = tier_problem(tier)
    if problem:
        pytest.skip(f"isolation tier {tier!r} cannot run on this machine: {problem}")


@pytest.fixture(scope="module")
def host_secret():
    """A secret in the host's environment and in a world-readable host file outside the workdir."""
    value = secrets.token_hex(8)
    os.environ[HOST_SECRET_VAR] = value
    path = Path(f"/tmp/glm-sandbox-test-{secrets.token_hex(4)}")
    path.mkdir(mode=0o755)
    (path / "secret.txt").write_text(value)
    os.chmod(path / "secret.txt", 0o644)  # only the sandbox can keep it from the kernel
    yield value, path
    os.environ.pop(HOST_SECRET_VAR, None)
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture(scope="module", params=TIERS)
def sb(request, host_secret):
    require(request.param)
    with Sandbox(settings(request.param)) as sandbox:
        assert sandbox.isolation == request.param
        yield sandbox


def run(sb: Sandbox, code: str, timeout: float | None = None):
    result = sb.execute(code, timeout=timeout)
    return result


def assert_alive(sb: Sandbox) -> None:
    result = sb.execute("print('alive')")
    assert result.stdout == "alive\n", result


# ----------------------------------------------------------------------------------------------
# positive controls


def test_prints_keeps_state_and_imports_the_scientific_stack(sb):
    assert run(sb, "x = 21\nprint('hello')").stdout == "hello\n"
    assert run(sb, "x * 2").result == "42"
    result = run(sb, "import numpy, sympy, pandas, matplotlib\nsympy.factorint(2**10 * 3)")
    assert result.error is None and result.result == "{2: 10, 3: 1}"


def test_matplotlib_figure_comes_back_as_png(sb):
    result = run(sb, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')")
    assert result.error is None
    assert len(result.images) == 1 and result.images[0].startswith(b"\x89PNG\r\n\x1a\n")


def test_file_written_to_the_data_dir_appears_in_the_host_workdir(sb):
    name = f"out-{secrets.token_hex(4)}.txt"
    result = run(sb, f"open({sb.data_dir + '/' + name!r}, 'w').write('data'); import os; os.getcwd()")
    assert result.error is None
    assert result.result == repr(sb.data_dir)  # the kernel starts in its data dir
    assert (sb.workdir / name).read_text() == "data"


def test_the_confinement_is_in_force(sb):
    result = run(sb, "import os, socket\n"
                     "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
                     "print(os.getuid(), status['NoNewPrivs'], status['Seccomp'], status['CapEff'], socket.gethostname())")
    uid, no_new_privs, seccomp, caps, hostname = result.stdout.split()
    if os.geteuid() == 0:
        assert int(uid) >= 1 << 30  # an unprivileged uid of its own, not root
    assert (no_new_privs, seccomp, caps) == ("1", "2", "0000000000000000")
    if sb.isolation == "bwrap":
        assert hostname == "sandbox"  # own UTS namespace
        pids = run(sb, "import os; sorted(int(p) for p in os.listdir('/proc') if p.isdigit())").result
        assert eval(pids)[0] == 1 and len(eval(pids)) <= 4  # own pid namespace: bwrap's init, us


# ----------------------------------------------------------------------------------------------
# resources


def test_fork_bomb_hits_the_process_limit(sb):
    result = run(sb, "import os, errno\n"
                     "pids = []\n"
                     "try:\n"
                     "    for _ in range(1000):\n"
                     "        pid = os.fork()\n"
                     "        if pid == 0:\n"
                     "            import time; time.sleep(60); os._exit(0)\n"
                     "        pids.append(pid)\n"
                     "except OSError as e:\n"
                     "    print(errno.errorcode[e.errno], len(pids))\n"
                     "for pid in pids:\n"
                     "    os.kill(pid, 9); os.waitpid(pid, 0)\n")
    code, forked = result.stdout.split()
    assert code == "EAGAIN" and int(forked) < 64
    assert_alive(sb)


def test_memory_bomb_raises_memory_error(sb):
    result = run(sb, "hog = []\nwhile True:\n    hog.append(bytearray(64 * 1024 * 1024))")
    assert result.error is not None and result.error.ename == "MemoryError"
    run(sb, "del hog")
    assert_alive(sb)
    assert not result.restarted


def test_infinite_loop_is_interrupted_and_state_survives(sb):
    run(sb, "survivor = 'still here'")
    result = run(sb, "while True:\n    pass", timeout=1)
    assert result.timed_out and not result.restarted
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"
    assert run(sb, "survivor").result == "'still here'"


def test_ignoring_sigint_gets_the_kernel_restarted(sb):
    run(sb, "doomed = 1")
    result = run(sb, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass", timeout=1)
    assert result.timed_out and result.restarted
    assert result.error.ename == "TimeoutError" and "restarted" in result.error.evalue
    after = run(sb, "doomed")
    assert after.error.ename == "NameError" and not after.restarted  # a fresh kernel, working


def test_huge_stdout_is_capped_with_a_marker(sb):
    result = run(sb, "for i in range(50_000):\n    print('x' * 99)\nprint('THE END')")
    assert result.error is None
    assert len(result.stdout) < 4000 + 200
    assert "characters of output cut" in result.stdout
    assert result.stdout.rstrip().endswith("THE END")  # the tail is kept


def test_a_1gb_file_stops_at_the_file_size_limit(sb):
    name = f"big-{secrets.token_hex(4)}.bin"
    result = run(sb, f"chunk = b'0' * (1 << 20)\n"
                     f"with open({name!r}, 'wb') as f:\n"
                     f"    for _ in range(1024):\n"
                     f"        f.write(chunk)")
    assert result.error is not None and "File too large" in result.error.evalue
    assert (sb.workdir / name).stat().st_size <= 16 * 1024 * 1024
    (sb.workdir / name).unlink()


def test_cpu_budget_kills_and_restarts_the_kernel():
    require("bwrap")
    with Sandbox(settings("bwrap", cpu_seconds=1)) as sandbox:
        result = sandbox.execute("while True:\n    pass")
        assert result.restarted and result.error.ename == "KernelDied"
        assert "CPU" in result.error.evalue
        assert_alive(sandbox)


# ----------------------------------------------------------------------------------------------
# files


def test_reading_etc_shadow_fails(sb):
    result = run(sb, "print(open('/etc/shadow').read())")
    assert result.error is not None and result.error.ename in ("FileNotFoundError", "PermissionError")
    assert result.stdout == ""


def test_reading_a_host_file_outside_the_workdir_fails(sb, host_secret):
    value, directory = host_secret
    result = run(sb, f"print(open({str(directory / 'secret.txt')!r}).read())")
    assert result.error is not None and result.error.ename in ("FileNotFoundError", "PermissionError")
    assert value not in result.stdout
    # The project's folder may appear as the parent of a venv inside it, but never its files.
    project = str(Path(__file__).resolve().parents[1])
    home = run(sb, f"import os\nfor p in ('/root', '/home', {project!r}):\n"
                   "    try: print(os.listdir(p))\n"
                   "    except OSError as e: print(type(e).__name__)")
    assert ".bashrc" not in home.stdout and "pyproject.toml" not in home.stdout  # no host homes, no source trees


def test_writing_outside_the_workdir_fails_also_through_dotdot_and_symlinks(sb, host_secret):
    _, directory = host_secret
    token = secrets.token_hex(4)
    targets = [
        f"{directory}/planted-{token}",  # a host directory
        f"/tmp/planted-{token}",  # the host's /tmp (tier B) or the private one (tier A, allowed)
        f"{sb.data_dir}/../planted-{token}",  # climbing out of the workdir
        f"{sb.data_dir}/up/planted-{token}",  # through a symlink to the parent
        f"{sb.data_dir}/hostdir/planted-{token}",  # through a symlink to the host directory
    ]
    code = (f"import os, numpy\n"
            f"os.symlink('..', 'up'); os.symlink({str(directory)!r}, 'hostdir')\n"
            f"for path in {targets!r} + [numpy.__file__ + '.planted', '/usr/lib/planted']:\n"
            f"    try:\n"
            f"        open(path, 'w').write('x'); print('WROTE', path)\n"
            f"    except OSError as e:\n"
            f"        print('denied', type(e).__name__)\n")
    result = run(sb, code)
    assert result.error is None, result
    wrote = [line for line in result.stdout.splitlines() if line.startswith("WROTE")]
    if sb.isolation == "bwrap":
        assert wrote == [f"WROTE /tmp/planted-{token}"]  # its own private /tmp
    else:
        assert wrote == []
    assert not list(directory.glob("planted-*"))
    assert not Path(f"/tmp/planted-{token}").exists()
    assert not list(sb.workdir.parent.glob("planted-*"))
    import numpy
    assert not Path(numpy.__file__ + ".planted").exists()
    (sb.workdir / "up").unlink()
    (sb.workdir / "hostdir").unlink()


# ----------------------------------------------------------------------------------------------
# network


@pytest.fixture
def host_server():
    """A TCP service on the host's 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connected = threading.Event()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            connected.set()
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    stop.set()
    thread.join()
    server.close()


def test_connecting_to_a_host_service_on_loopback_fails(sb, host_server):
    port, connected = host_server
    result = run(sb, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)")
    assert result.error is not None and result.error.ename in ("ConnectionRefusedError", "PermissionError")
    assert not connected.is_set()


def test_connecting_to_an_outside_address_fails(sb):
    result = run(sb, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)")
    assert result.error is not None
    assert result.error.ename in ("OSError", "PermissionError", "ConnectionRefusedError")
    assert not result.timed_out


def test_dns_fails(sb):
    result = run(sb, "import socket\nsocket.getaddrinfo('example.com', 443)")
    assert result.error is not None and result.error.ename == "gaierror"
    udp = run(sb, "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "s.sendto(b'x', ('8.8.8.8', 53))")
    assert udp.error is not None


def test_mptcp_sockets_cannot_be_made(sb, host_server):
    """Issue 10.1: MPTCP (protocol 262) once went around the Landlock TCP rules."""
    port, connected = host_server
    result = run(sb, f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
                     f"s.settimeout(3)\ns.connect(('127.0.0.1', {port}))")
    assert result.error is not None and not connected.is_set()


def test_tcp_fast_open_without_connect_reaches_nobody(sb, host_server):
    """Issue 10.1: sendto(MSG_FASTOPEN) connects without connect(), which Landlock alone did not see."""
    port, connected = host_server
    result = run(sb, f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
                     f"s.settimeout(3)\ns.sendto(b'x', socket.MSG_FASTOPEN, ('127.0.0.1', {port}))")
    time.sleep(0.5)
    assert result.error is not None and not connected.is_set()


def test_listening_for_the_outside_world_fails(sb):
    """Issue 10.1: listen() on 0.0.0.0 (also without bind: the kernel picks a port) must not accept from the host."""
    result = run(sb, "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
                     "s.listen()\nprint(s.getsockname()[1])")
    if result.error is None:  # it listens in its own network namespace: the host must not reach it
        port = int(result.stdout.strip())
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    bound = run(sb, "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"
                    "s.bind(('::', 0))\ns.listen()\nprint(s.getsockname()[1])")
    if bound.error is None:
        with pytest.raises(OSError):
            socket.create_connection(("::1", int(bound.stdout.strip())), timeout=2).close()


@pytest.mark.parametrize("family", ["AF_VSOCK", "AF_PACKET", "AF_BLUETOOTH", "AF_CAN", "AF_ALG", "AF_RDS", "AF_TIPC"])
def test_address_families_that_namespaces_do_not_isolate_are_refused(sb, family):
    """Issue 10.2: AF_VSOCK once bound a port in the host's vsock space from the bwrap tier."""
    result = run(sb, f"import socket\nsocket.socket(getattr(socket, {family!r}, 40), socket.SOCK_STREAM)")
    assert result.error is not None and result.error.ename in ("OSError", "PermissionError", "AttributeError")
    assert "Address family not supported" in result.error.evalue or result.error.ename != "OSError"
    assert_alive(sb)


# ----------------------------------------------------------------------------------------------
# processes


@pytest.fixture
def neighbour(sb):
    """Another session's kernel on the same host, which the attacks must not reach."""
    with Sandbox(settings(sb.isolation)) as other:
        other.execute("mine = 'intact'")
        yield other


def test_killing_the_parent_and_the_host_fails(sb, neighbour):
    run(sb, "before_the_attack = 'kept'")
    host = subprocess.Popen(["sleep", "60"])  # a host process besides this one
    try:
        targets = f"{{'parent': os.getppid(), 'this test': {os.getpid()}, 'host': {host.pid}, 'init': 1}}"
        result = run(sb, f"import os, signal\n"
                         f"for name, pid in {targets}.items():\n"
                         f"    try:\n"
                         f"        os.kill(pid, signal.SIGKILL); print(name, 'sent')\n"
                         f"    except OSError as e:\n"
                         f"        print(name, type(e).__name__)")
        assert result.error is None, result
        outcome = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
        assert set(outcome) == {"parent", "this test", "host", "init"}, result.stdout
        # Host processes are out of reach: not in the pid namespace (tier A) or not ours to signal (tier B).
        for name in ("this test", "host"):
            assert outcome[name] in ("ProcessLookupError", "PermissionError"), result.stdout
        time.sleep(0.2)
        assert host.poll() is None, "the host process was killed from inside the sandbox"
    finally:
        host.kill()
        host.wait()
    # The parent (bubblewrap's init or the supervisor) and init ignored or refused it: same kernel, same state.
    after = run(sb, "before_the_attack")
    assert after.result == "'kept'" and not after.restarted, after
    assert neighbour.execute("mine").result == "'intact'"


def test_kill_minus_one_only_reaches_the_sandbox(sb, neighbour):
    result = run(sb, "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print(type(e).__name__)")
    time.sleep(0.2)
    assert result.error is None or result.restarted
    assert neighbour.execute("mine").result == "'intact'"
    assert_alive(sb)


def test_os_exit_is_detected_and_the_kernel_restarted(sb):
    run(sb, "lost = True")
    result = run(sb, "import os\nos._exit(7)")
    assert result.restarted and not result.timed_out
    assert result.error.ename == "KernelDied" and "exit code 7" in result.error.evalue
    assert run(sb, "lost").error.ename == "NameError"


def test_sigkill_of_itself_is_detected(sb):
    result = run(sb, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.restarted and result.error.ename == "KernelDied" and "SIGKILL" in result.error.evalue
    assert_alive(sb)


def test_ctypes_system_runs_confined(sb, host_secret):
    value, directory = host_secret
    result = run(sb, f"import ctypes\n"
                     f"libc = ctypes.CDLL(None)\n"
                     f"libc.system(b'id -u > id.txt; cat /etc/shadow {directory}/secret.txt > leak.txt 2>&1; "
                     f"touch {directory}/planted')")
    assert result.error is None
    uid = int((sb.workdir / "id.txt").read_text())
    assert uid != 0 or os.geteuid() != 0
    leak = (sb.workdir / "leak.txt").read_text()
    assert value not in leak and "root:" not in leak
    assert not (directory / "planted").exists()


def test_host_environment_variables_do_not_leak(sb, host_secret):
    value, _ = host_secret
    result = run(sb, f"import os\n"
                     f"print(sorted(os.environ))\n"
                     f"try:\n"
                     f"    print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
                     f"except OSError as e:\n"
                     f"    print(type(e).__name__)")
    assert HOST_SECRET_VAR not in result.stdout and value not in result.stdout
    assert "OPENAI" not in result.stdout and "HF_" not in result.stdout


@pytest.mark.slow
def test_setsid_children_and_a_real_fork_bomb_die_with_the_sandbox(sb):
    marker = f"glm-sandbox-survivor-{secrets.token_hex(4)}"
    with Sandbox(settings(sb.isolation)) as sandbox:
        result = sandbox.execute(
            f"import subprocess, sys, os\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}], start_new_session=True)\n"
            f"if os.fork() == 0:\n"  # a double-forked daemon in its own session
            f"    os.setsid()\n"
            f"    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}])\n"
            f"    os._exit(0)\n"
            f"import time; time.sleep(0.5)\n"
            f"print('started')")
        assert result.stdout == "started\n", result
        assert _processes_with(marker), "the children should be running before close"
        bomb = sandbox.execute("import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                               "        time.sleep(0.05)", timeout=2)
        assert bomb.timed_out
    assert _processes_with(marker) == []


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


# ----------------------------------------------------------------------------------------------
# issue 10.7-10.8: cleanup and kernel start against what the code leaves behind


@pytest.mark.parametrize("tier", TIERS)
def test_a_1200_level_tree_and_a_locked_folder_are_cleaned_up(tier, tmp_path):
    require(tier)
    sandbox = Sandbox(settings(tier))
    workdir = sandbox.workdir
    result = run(sandbox, "import os\np = os.getcwd()\nfor _ in range(1200):\n    p += '/d'\n    os.mkdir(p)\n"
                          "os.makedirs('locked/inner')\nopen('locked/inner/f', 'w').write('x')\n"
                          "os.chmod('locked/inner', 0)\nos.chmod('locked', 0)\nprint('ok')")
    assert result.stdout == "ok\n", result
    sandbox.close()  # must not raise (RecursionError once did) nor leave the data behind
    assert not workdir.exists()


@pytest.mark.parametrize("tier", TIERS)
def test_planted_runtime_folders_and_launcher_modules_do_not_break_or_hijack_restarts(tier):
    require(tier)
    with Sandbox(settings(tier)) as sandbox:
        planted = run(sandbox, "import os\nfrom ipykernel.connect import get_connection_file\n"
                               "d = os.path.dirname(get_connection_file())\n"
                               "os.makedirs(os.path.join(d, 'planted', 'deeper'))\n"
                               "open('ipykernel_launcher.py', 'w').write(\"open('pwned', 'w').write('1')\")\n"
                               "print('planted')")
        assert planted.stdout == "planted\n", planted
        for _ in range(2):
            sandbox.restart()
            assert run(sandbox, "1 + 1").result == "2"
        assert not (sandbox.workdir / "pwned").exists()
        # a notebook still imports the user's own modules from /mnt/data
        (sandbox.workdir / "mymodule.py").write_text("VALUE = 7\n")
        assert run(sandbox, "import mymodule\nmymodule.VALUE").result == "7"


def test_lone_surrogates_in_kernel_messages_are_replaced(sb):
    """Issue 10.8: a message whose JSON escapes a lone surrogate once made `agent run` exit 1.

    ipykernel refuses to send one, so the code packs the message itself, as hostile code can.
    """
    code = ("k = get_ipython().kernel\nfor kind, content in [('stream', b'{\"name\": \"stdout\", \"text\": \"a\\\\ud800b\\\\n\"}'),\n"
            "    ('error', b'{\"ename\": \"E\\\\udfff\", \"evalue\": \"v\\\\ud800\", \"traceback\": [\"t\\\\ud800\"]}')]:\n"
            "    msg = k.session.msg(kind, content={}, parent=k.get_parent())\n"
            "    msg['content'] = content\n"
            "    k.session.send(k.iopub_socket, msg)\n")
    result = run(sb, code)
    assert result.stdout == "a\ufffdb\n", result
    assert result.error is not None and result.error.ename == "E\ufffd" and result.error.evalue == "v\ufffd"
    result.model_dump_json()  # serialisable (transcripts, --json)
    assert_alive(sb)


def test_an_image_flood_is_capped_and_fake_pngs_are_dropped(sb):
    """Issue 10.6: one cell once wrote 800 MB of fake "PNG" images to the host."""
    code = ("import base64, io\nfrom IPython.display import display\nimport matplotlib\nmatplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(1, 1))\nbuf = io.BytesIO()\n"
            "fig.savefig(buf, format='png')\nreal = buf.getvalue()\n"
            "display({'image/png': base64.b64encode(b'not a png at all' * 1000).decode()}, raw=True)\n"
            "display({'image/png': base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n' + b'0' * (20 * 2**20)).decode()}, raw=True)\n"
            "for _ in range(30):\n    display({'image/png': base64.b64encode(real).decode()}, raw=True)\n")
    result = run(sb, code)
    assert result.error is None, result.error
    assert len(result.images) == kernel_module.MAX_IMAGES
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) < 2**20 for image in result.images)
    assert "not kept" in result.stdout and "not a PNG" in result.stdout and "too large" in result.stdout


# ----------------------------------------------------------------------------------------------
# issue 10.3-10.4: other sessions' kernels and host processes are out of reach


def test_a_kernel_cannot_reach_another_kernels_channels_even_under_the_same_uid(monkeypatch):
    """Landlock tier, as a normal user runs it: every kernel shares the user's uid. One session once
    subscribed to another's output socket and read its code and output."""
    require("landlock")
    uid = isolation.allocate_uid()
    monkeypatch.setattr(isolation, "allocate_uid", lambda: uid)  # both kernels under one uid, as without root
    monkeypatch.setattr(isolation, "release_uid", lambda _uid: None)
    try:
        with Sandbox(settings("landlock")) as victim, Sandbox(settings("landlock")) as attacker:
            address = victim._kernel._client.iopub_channel.socket.getsockopt_string(zmq.LAST_ENDPOINT)
            target = address.removeprefix("ipc://")
            code = ("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                    f"target = {target!r}\n"
                    "s.connect('\\0' + target[1:] if target.startswith('@') else target)\nprint('connected')")
            result = run(attacker, code)
            assert result.error is not None and "connected" not in result.stdout, (address, result)
            assert run(victim, "print('still private')").stdout == "still private\n"
    finally:
        isolation.sweep_uid(uid)
        isolation._uids_in_use.discard(uid)


def test_host_processes_command_lines_are_not_readable(sb):
    """Issue 10.4: Landlock-tier code read --api-key from the host process's /proc/<pid>/cmdline."""
    secret = "sk-" + secrets.token_hex(8)
    host = subprocess.Popen(["python3", "-c", "import time; time.sleep(60)", f"--api-key={secret}"],
                            env={**os.environ, "OPENAI_API_KEY": secret})
    try:
        result = run(sb, "import os\nfound = []\n"
                         "try: pids = os.listdir('/proc')\n"
                         f"except OSError: pids = [str(p) for p in range(1, 70000)] + [{str(host.pid)!r}]\n"
                         "for pid in pids:\n"
                         "    for part in ('cmdline', 'environ'):\n"
                         "        try: found.append(open(f'/proc/{pid}/{part}', 'rb').read())\n"
                         "        except OSError: pass\n"
                         f"print(any({secret.encode()!r} in data for data in found))\n"
                         f"try: print(open('/proc/{os.getpid()}/cmdline').read()[:20])\n"
                         "except OSError as e: print(type(e).__name__)")
        assert result.stdout.splitlines()[0] == "False", result
        assert result.stdout.splitlines()[1] in ("FileNotFoundError", "PermissionError"), result
        assert run(sb, "import os\nlen(open('/proc/self/status').read()) > 0").result == "True"
        assert run(sb, "import os\nos.cpu_count() > 0").result == "True"
    finally:
        host.kill()
        host.wait()


# ----------------------------------------------------------------------------------------------
# issue 10.5: limits for the kernel and everything it starts, not per process


def require_cgroups() -> None:
    from sandbox.cgroups import cgroup_problem

    if cgroup_problem():
        pytest.skip(f"per-kernel cgroups cannot be used here: {cgroup_problem()}")


@pytest.mark.parametrize("tier", TIERS)
def test_children_share_the_kernels_memory_limit(tier):
    """With memory_mb = 512, eight children once held 2.5 GB."""
    require(tier)
    require_cgroups()
    with Sandbox(settings(tier, memory_mb=512)) as sandbox:
        result = run(sandbox, "import subprocess, sys\n"
                              "child = \"b = b'x' * (200 * 2**20); print('held', flush=True); import time; time.sleep(3)\"\n"
                              "procs = [subprocess.Popen([sys.executable, '-c', child], stdout=subprocess.PIPE, text=True)"
                              " for _ in range(8)]\n"
                              "[p.communicate() for p in procs]\n"
                              "print(sum(p.returncode == 0 for p in procs))", timeout=60)
        if result.error is None:  # the kernel survived: the children over the limit were stopped instead
            assert int(result.stdout.strip()) <= 2, result  # at most two held 200 MB to the end
        else:
            assert result.restarted, result
        assert_alive(sandbox)


@pytest.mark.parametrize("tier", TIERS)
def test_memfds_count_against_the_memory_limit(tier):
    """memfds once held 2 GB beside a 512 MB kernel."""
    require(tier)
    require_cgroups()
    with Sandbox(settings(tier, memory_mb=512)) as sandbox:
        # Each memfd stays under max_file_mb (16 MB): together they would hold 1.5 GB.
        result = run(sandbox, "import os\nfds = []\nfor _ in range(100):\n    fd = os.memfd_create('x')\n"
                              "    assert os.write(fd, b'x' * (15 * 2**20)) == 15 * 2**20\n    fds.append(fd)\n"
                              "print(len(fds))", timeout=60)
        assert result.error is not None, result  # out of memory long before 1.5 GB: an error, or the kernel died
        assert_alive(sandbox)


@pytest.mark.parametrize("tier", TIERS)
def test_the_cpu_budget_counts_every_child(tier):
    """cpu_seconds = 3 once allowed 6 CPU-seconds over two children."""
    require(tier)
    require_cgroups()
    with Sandbox(settings(tier, cpu_seconds=3)) as sandbox:
        started = time.monotonic()
        result = run(sandbox, "import subprocess, sys, time\n"
                              "spin = 'while True: pass'\n"
                              "procs = [subprocess.Popen([sys.executable, '-c', spin]) for _ in range(2)]\n"
                              "time.sleep(30)", timeout=60)
        assert result.restarted and "CPU budget of 3 s" in str(result.error), result
        assert time.monotonic() - started < 20  # two children spend 3 s together in about 1.5 s
        assert_alive(sandbox)


@pytest.mark.parametrize("tier", TIERS)
def test_mnt_data_holds_at_most_disk_mb_and_max_files(tier):
    """/mnt/data once took 1 GB in 100k files."""
    require(tier)
    if os.geteuid() != 0:
        pytest.skip("capping the kernel's own /mnt/data needs root (a tmpfs mount)")
    with Sandbox(settings(tier, disk_mb=32, max_files=200)) as sandbox:
        many = run(sandbox, "import os\nmade = 0\ntry:\n    for i in range(100_000):\n"
                            "        open(f'f{i}', 'w').close()\n        made += 1\n"
                            "except OSError as e:\n    print(made, e.errno)")
        made, errno = many.stdout.split()
        assert int(made) < 200 and errno == "28", many  # ENOSPC: no inodes left
        run(sandbox, "import os\nfor i in range(190):\n    try: os.remove(f'f{i}')\n    except OSError: pass")
        big = run(sandbox, "written = 0\ntry:\n    for i in range(10):\n"
                           "        open(f'big{i}', 'wb').write(b'x' * (15 * 2**20))\n        written += 15\n"
                           "except OSError as e:\n    print(written, e.errno)")
        written, errno = big.stdout.split()
        assert int(written) <= 32 and errno == "28", big
        stats = os.statvfs(sandbox.workdir)
        assert stats.f_blocks * stats.f_frsize <= 33 * 2**20  # a 32 MB tmpfs, not the host's disk


# ----------------------------------------------------------------------------------------------
# the font list every kernel shares


def test_kernels_use_the_shared_font_list_and_cannot_change_it(sb):
    """pyplot finds the shared list (it writes no font cache of its own), and the kernel can neither
    write it nor replace it: the next kernel reads what was built, untouched."""
    shared = fontcache.font_list(sb.isolation, sb.settings)
    if shared is None:
        pytest.skip("the kernel's interpreter has no matplotlib")
    before = shared.read_bytes()
    found = run(sb, "import matplotlib, matplotlib.pyplot, os\nsorted(os.listdir(matplotlib.get_cachedir()))")
    assert found.result == repr([shared.name]), found  # read, not rebuilt next to it
    attack = run(sb, f"""
import matplotlib, os
path = os.path.join(matplotlib.get_cachedir(), {shared.name!r})
outcomes = {{}}
for name, attempt in (('write', lambda: open(path, 'a').write('{{}}')), ('chmod', lambda: os.chmod(path, 0o666)),
                      ('write again', lambda: open(path, 'a').write('{{}}')),
                      ('replace', lambda: open(path + '.new', 'w').write('{{}}') and os.replace(path + '.new', path))):
    try:
        attempt()
        outcomes[name] = 'done'
    except OSError as exc:
        outcomes[name] = type(exc).__name__
outcomes""")
    outcomes = ast.literal_eval(attack.result or "{}")
    assert outcomes["write"] != "done", attack
    if sb.isolation == "bwrap" or isolation.running_as_root():  # else a tier-B kernel may change its own copy
        assert outcomes["chmod"] != "done" and outcomes["write again"] != "done", attack
    if sb.isolation == "bwrap":  # the others may replace their own copy, which no other kernel reads
        assert outcomes["replace"] != "done", attack
    assert shared.read_bytes() == before  # what every other kernel reads
    assert_alive(sb)
