"""Sandbox mechanics on the tier ``auto`` picks here: results, state, workdirs, pool, async, tiers.

The attacks live in ``test_sandbox_adversarial.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import time

import pytest

from agent.policy import Policy
from sandbox import (
    AsyncSandbox,
    ExecutionError,
    ExecutionResult,
    Kernel,
    KernelPool,
    KernelStartError,
    Sandbox,
    SandboxClosedError,
    SandboxError,
    SandboxSettings,
    SandboxUnavailableError,
    isolation,
    resolve_isolation,
    tier_problem,
)
from sandbox import kernel as kernel_module
from sandbox.results import CappedText, truncate


def settings(**overrides) -> SandboxSettings:
    values = dict(timeout_s=20, interrupt_grace_s=1.5, pool_size=0, preload=[], output_bytes=2000)
    values.update(overrides)
    return SandboxSettings(**values)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(settings()) as sandbox:
        yield sandbox


# ----------------------------------------------------------------------------------------------
# tiers


def test_auto_picks_the_strongest_tier_that_works_here():
    if tier_problem("bwrap") is None:
        expected = "bwrap"
    elif tier_problem("landlock") is None:
        expected = "landlock"
    else:
        pytest.skip(f"no OS sandbox here: {tier_problem('bwrap')}; {tier_problem('landlock')}")
    assert resolve_isolation("auto") == expected


def test_without_any_sandbox_it_refuses_and_says_how_to_fix_it(monkeypatch):
    monkeypatch.setattr(isolation, "tier_problem", lambda tier, python=None: f"no {tier} here")
    with pytest.raises(SandboxUnavailableError) as auto:
        resolve_isolation("auto")
    assert "apt-get install bubblewrap" in str(auto.value) and 'isolation = "none"' in str(auto.value)
    with pytest.raises(SandboxUnavailableError, match="isolation = 'bwrap'.*no bwrap here.*apt-get install bubblewrap"):
        resolve_isolation("bwrap")
    with pytest.raises(SandboxUnavailableError, match="isolation = 'landlock'.*no landlock here"):
        resolve_isolation("landlock")
    assert resolve_isolation("none") == "none"  # only when the policy says so


def test_bwrap_unavailable_falls_back_to_landlock(monkeypatch):
    monkeypatch.setattr(isolation, "tier_problem", lambda tier, python=None: "missing" if tier == "bwrap" else None)
    assert resolve_isolation("auto") == "landlock"


def test_isolation_none_runs_unconfined_when_explicit(tmp_path):
    with Sandbox(settings(isolation="none"), workdir=tmp_path / "w") as sandbox:
        assert sandbox.isolation == "none"
        result = sandbox.execute("import os; os.getcwd()")
        assert result.result == repr(str(tmp_path / "w"))


def test_policies_validate_the_sandbox_section():
    with pytest.raises(ValueError):
        SandboxSettings(isolation="docker")
    assert Policy().sandbox.isolation == "auto"


# ----------------------------------------------------------------------------------------------
# results


def test_streams_value_and_display_are_separated(sb):
    result = sb.execute("import sys\nprint('out')\nprint('err', file=sys.stderr)\ndisplay('shown')\n6 * 7")
    assert result.stdout == "out\n'shown'\n"
    assert result.stderr == "err\n"
    assert result.result == "42"
    assert result.ok and not result.timed_out and not result.restarted


def test_errors_come_without_ansi_codes(sb):
    result = sb.execute("def f():\n    return 1 / 0\nf()")
    assert isinstance(result.error, ExecutionError)
    assert result.error.ename == "ZeroDivisionError" and result.error.evalue == "division by zero"
    assert result.error.traceback and not any("\x1b" in line for line in result.error.traceback)
    assert any("return 1 / 0" in line for line in result.error.traceback)
    text = result.to_text()
    assert text.splitlines()[-1] == "ZeroDivisionError: division by zero"


def test_output_is_capped_per_stream(sb):
    result = sb.execute("print('a' * 10_000)")
    assert len(result.stdout) < 2100 and "[... 8" in result.stdout


def test_restart_keeps_files_but_not_variables(sb):
    sb.execute("kept = 1\nopen('kept.txt', 'w').write('file')")
    sb.restart()
    assert sb.execute("kept").error.ename == "NameError"
    assert sb.execute("open('kept.txt').read()").result == "'file'"


def test_a_kernel_killed_between_cells_is_restarted_on_the_next(sb):
    sb.execute("gone = 1")
    os.killpg(sb._kernel._proc.pid, signal.SIGKILL)  # what the OOM killer would do
    sb._kernel._proc.wait()
    result = sb.execute("'back'")
    assert result.result == "'back'" and result.restarted
    assert sb.execute("gone").error.ename == "NameError"


def test_kernels_start_without_the_debugger_yet_a_cell_may_import_it(sb):
    assert sb.execute("import sys; 'debugpy' in sys.modules").result == "False"
    if importlib.util.find_spec("debugpy") is not None:
        assert sb.execute("import debugpy; debugpy.__name__").result == "'debugpy'"


def test_multiprocessing_works_under_bubblewrap(sb):
    if sb.isolation != "bwrap":
        pytest.skip("needs the private /dev/shm of the bubblewrap tier")
    result = sb.execute("from multiprocessing import Pool\nwith Pool(2) as pool:\n    print(pool.map(abs, [-1, -2]))")
    assert result.stdout == "[1, 2]\n", result


def test_to_text_reads_like_a_notebook():
    result = ExecutionResult(stdout="hi\n", result="3", error=ExecutionError(
        ename="ValueError", evalue="bad", traceback=["Traceback", "  line 1", "ValueError: bad"]))
    assert result.to_text() == "hi\n3\nTraceback\n  line 1\nValueError: bad"
    assert ExecutionResult().to_text() == "(no output)"
    assert "restarted" in ExecutionResult(restarted=True).to_text()
    long = truncate("x" * 1000, 200)
    assert len(long) <= 260 and "characters cut" in long


def test_capped_text_keeps_head_and_tail():
    text = CappedText(10)
    for piece in ["abc", "defgh", "ijklmnop", "qrst"]:
        text.add(piece)
    assert text.text() == "abcde\n[... 10 characters of output cut ...]\npqrst"


# ----------------------------------------------------------------------------------------------
# workdirs and lifecycle


def test_a_given_workdir_is_kept_and_handed_back(tmp_path):
    workdir = tmp_path / "session"
    with Sandbox(settings(), workdir=workdir) as sandbox:
        assert sandbox.workdir == workdir.resolve()
        sandbox.execute(f"open({sandbox.data_dir + '/made.txt'!r}, 'w').write('ok')")
    made = workdir / "made.txt"
    assert made.read_text() == "ok"
    assert made.stat().st_uid == os.getuid()  # lent to the kernel's uid, given back


def test_a_temporary_workdir_is_deleted_on_close():
    sandbox = Sandbox(settings())
    workdir = sandbox.workdir
    sandbox.execute("open('x', 'w').write('1')")
    sandbox.close()
    assert not workdir.exists()
    with pytest.raises(SandboxClosedError):
        sandbox.execute("1")
    sandbox.close()  # idempotent


def test_a_kernel_that_does_not_start_in_time_is_reported():
    with KernelPool(settings(startup_timeout_s=0.05), size=0) as pool:
        with pytest.raises(KernelStartError, match="did not start within"):
            pool.claim(timeout=30)


def test_network_can_be_allowed_by_the_policy():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with Sandbox(settings(network=True)) as sandbox:
            port = server.getsockname()[1]
            result = sandbox.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()")
            assert result.error is None, result
    finally:
        server.close()


# ----------------------------------------------------------------------------------------------
# pool


@pytest.mark.slow
def test_pool_hands_out_warm_preloaded_kernels_once():
    with KernelPool(settings(preload=["numpy"]), size=1) as pool:
        first = pool.claim(timeout=60)
        second = pool.claim(timeout=60)
        try:
            assert first is not second and first.workdir != second.workdir
            assert first.uid != second.uid or first.uid is None
            wait_for_preload(first)
            check = first.execute("import sys; ('numpy' in sys.modules, [n for n in ('numpy', 'MODULES', 'preload') "
                                  "if n in globals()])")
            assert check.result == "(True, [])"  # imported ahead, the namespace left clean
            first.execute("secret = 'session one'")
            assert second.execute("secret").error.ename == "NameError"
        finally:
            first.close()
            second.close()
        while not pool.ready:  # a replacement is being warmed
            pool._thread.join(0.05)
        warm = list(pool._ready)
    assert all(not kernel.alive for kernel in warm)  # closing the pool closes what it holds


def test_without_refill_a_pool_starts_kernels_only_for_claims(monkeypatch):
    """One session in all (``agent run``): no spare is warmed after the claim, yet a second claim still gets a kernel."""
    starts = []
    start = Kernel.start
    monkeypatch.setattr(Kernel, "start", lambda self: starts.append(self) or start(self))
    with KernelPool(settings(), size=1, refill=False) as pool:
        first = pool.claim(timeout=60)
        second = pool.claim(timeout=60)  # started on demand
        first.close()
        second.close()
    assert len(starts) == 2


def wait_for_preload(kernel: Kernel, timeout: float = 60) -> None:
    """Until the kernel's preload thread has finished."""
    deadline = time.monotonic() + timeout
    check = f"import threading; any(t.name == {kernel_module.PRELOAD_THREAD!r} for t in threading.enumerate())"
    while kernel.execute(check).result != "False":
        assert time.monotonic() < deadline, "the preload did not finish"
        time.sleep(0.05)


def test_a_kernel_answers_while_it_preloads_and_an_import_waits_for_the_preload():
    """The preload runs beside the cells: a module that cannot finish importing until told (a file
    appears) holds up neither ``1+1`` nor a ``print``; importing it meanwhile waits and gets it whole."""
    kernel = Kernel(settings(), resolve_isolation("auto"))
    try:
        (kernel.workdir / "slow_module.py").write_text(
            "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nDONE = True\n")
        kernel.start()
        kernel.preload(["slow_module"])
        assert kernel.execute("1+1").result == "2"
        assert kernel.execute("import sys; print(getattr(sys.modules.get('slow_module'), 'DONE', None))").stdout \
            == "None\n"  # still importing
        waited = kernel.execute("import threading\nthreading.Timer(0.3, lambda: open('go', 'w').close()).start()\n"
                                "import slow_module\nslow_module.DONE")
        assert waited.result == "True", waited
        wait_for_preload(kernel)
        assert kernel.execute("[n for n in ('MODULES', 'preload', 'threading') if n in globals()]").result \
            == "['threading']"  # the user's own import; the preload bound nothing
    finally:
        kernel.close()


def test_a_module_that_fails_to_preload_is_left_to_the_users_import():
    with KernelPool(settings(preload=["no_such_module_here", "json"]), size=1) as pool:
        kernel = pool.claim(timeout=60)
    try:
        wait_for_preload(kernel)
        assert kernel.execute("import sys; 'json' in sys.modules").result == "True"
        assert kernel.execute("import no_such_module_here").error.ename == "ModuleNotFoundError"
    finally:
        kernel.close()


# ----------------------------------------------------------------------------------------------
# async


async def test_async_sandbox_runs_and_cancelling_interrupts():
    async with AsyncSandbox(settings()) as sandbox:
        assert (await sandbox.execute("1 + 1")).result == "2"
        task = asyncio.create_task(sandbox.execute(
            "import time\nopen('started', 'w').close()\n"
            "try:\n    while True:\n        time.sleep(0.05)\n"
            "except KeyboardInterrupt:\n    open('interrupted', 'w').close()\n    raise"))
        await _until(lambda: (sandbox.workdir / "started").exists(), "the cell to start")
        task.cancel()  # the cell is running now: the interrupt cannot arrive before it
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: (sandbox.workdir / "interrupted").exists(), "the cell to be interrupted")
        after = await asyncio.wait_for(sandbox.execute("'responsive'"), timeout=10)  # well before timeout_s
        assert after.result == "'responsive'" and not after.restarted and not after.timed_out
    with pytest.raises(SandboxClosedError):
        await sandbox.execute("1")


async def _until(condition, what: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_concurrent_cells_of_one_async_sandbox_run_in_order():
    """Like a notebook: a cell called while another runs waits for it, then sees its variables."""
    async with AsyncSandbox(settings()) as sandbox:
        first, second, third = await asyncio.gather(
            sandbox.execute("import time\ntime.sleep(0.3)\nx = 1\nprint('first')"),
            sandbox.execute("y = x + 1\nprint('second')"),
            sandbox.execute("x, y"),
        )
        assert (first.stdout, second.stdout, third.result) == ("first\n", "second\n", "(1, 2)"), (first, second, third)


async def test_concurrent_starts_share_one_kernel_and_closing_while_starting_leaks_none():
    in_use = set(isolation._uids_in_use)
    sandbox = AsyncSandbox(settings())
    await asyncio.gather(sandbox.start(), sandbox.start())
    kernel = sandbox.sandbox._kernel
    await sandbox.start()
    assert sandbox.sandbox._kernel is kernel
    await sandbox.aclose()
    assert not kernel.alive

    starting = AsyncSandbox(settings())
    task = asyncio.create_task(starting.start())
    await asyncio.sleep(0.05)  # the kernel is being started in a thread
    await starting.aclose()
    with pytest.raises(SandboxClosedError):
        await task
    assert isolation._uids_in_use == in_use  # every kernel started here was closed (as root: its uid is free)


# ----------------------------------------------------------------------------------------------
# uids (as root every kernel runs as a uid of its own)


def test_live_kernels_never_share_a_uid(monkeypatch):
    monkeypatch.setattr(isolation, "running_as_root", lambda: True)
    monkeypatch.setattr(isolation, "_uids_in_use", set(isolation._uids_in_use))  # this test's own book
    base = isolation._uid_base()
    taken = []
    with pytest.raises(SandboxError, match="sandboxes are open in this process"):
        while True:  # kernel 257 used to get kernel 1's uid
            taken.append(isolation.allocate_uid())
    assert len(taken) == len(set(taken)) and len(taken) <= isolation.UIDS_PER_PROCESS
    assert all(base <= uid < base + isolation.UIDS_PER_PROCESS and uid >= 1 << 30 for uid in taken)
    assert not set(taken) & {kernel.uid for kernel in list(kernel_module._live)}  # nor a live kernel's
    isolation.release_uid(taken[3])
    assert isolation.allocate_uid() == taken[3]  # a closed kernel's uid can be used again
    with pytest.raises(SandboxError):
        isolation.allocate_uid()


def test_closing_a_kernel_gives_its_uid_back():
    if os.geteuid() != 0:
        pytest.skip("kernels get uids of their own only when started as root")
    kernel = Kernel(settings(), resolve_isolation("auto"))
    uid = kernel.uid
    assert uid in isolation._uids_in_use
    other = Kernel(settings(), kernel.tier)
    try:
        assert other.uid != uid
    finally:
        other.close()
    kernel.start()
    kernel.close()
    assert uid not in isolation._uids_in_use and other.uid not in isolation._uids_in_use


# ----------------------------------------------------------------------------------------------
# closing a pool that is warming


def test_closing_a_pool_kills_the_kernel_it_is_starting_instead_of_waiting():
    resolve_isolation("auto")  # the tier probes run once per process: not what is measured
    # A slow start: the scientific stack is imported before the kernel counts as warm.
    pool = KernelPool(settings(preload=["numpy", "pandas", "sympy", "matplotlib.pyplot"]), size=1)
    deadline = time.monotonic() + 15
    while pool._starting is None or not pool._starting.alive:
        assert time.monotonic() < deadline, "the pool did not start a kernel"
        time.sleep(0.01)
    starting = pool._starting
    began = time.perf_counter()
    pool.close()
    took = time.perf_counter() - began
    assert took < 1.0, f"closing the pool took {took:.2f} s: it waited for the kernel to start"
    assert not starting.alive and not starting.workdir.exists()
    assert not pool._thread.is_alive() and not pool.ready
    with pytest.raises(SandboxClosedError):
        pool.claim(timeout=1)


async def test_a_cancelled_cell_that_ignores_interrupts_does_not_hold_up_the_next_one():
    """Ctrl-C on code that ignores SIGINT: the kernel is restarted after the grace period, not after timeout_s."""
    async with AsyncSandbox(settings(timeout_s=120, interrupt_grace_s=1.0)) as sandbox:
        await sandbox.execute("x = 1")
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('deaf', flush=True)\ntime.sleep(100)"
        heard, loop = asyncio.Event(), asyncio.get_running_loop()
        task = asyncio.ensure_future(sandbox.execute(code, on_output=lambda stream, text: loop.call_soon_threadsafe(heard.set)))
        await asyncio.wait_for(heard.wait(), 60)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await sandbox.execute("print('next')")
        assert result.stdout == "next\n" and time.monotonic() - started < 30
