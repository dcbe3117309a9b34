"""Sandbox mechanics on the tier ``auto`` picks here: results, state, workdirs, pool, async, tiers.

The attacks live in ``test_sandbox_adversarial.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from agent.policy import Policy, SandboxSettings
from sandbox import (
    AsyncSandbox,
    ExecutionError,
    ExecutionResult,
    KernelPool,
    KernelStartError,
    Sandbox,
    SandboxClosedError,
    SandboxUnavailableError,
    isolation,
    resolve_isolation,
    tier_problem,
)
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
    monkeypatch.setattr(isolation, "tier_problem", lambda tier: f"no {tier} here")
    with pytest.raises(SandboxUnavailableError) as auto:
        resolve_isolation("auto")
    assert "apt-get install bubblewrap" in str(auto.value) and 'isolation = "none"' in str(auto.value)
    with pytest.raises(SandboxUnavailableError, match="isolation = 'bwrap'.*no bwrap here.*apt-get install bubblewrap"):
        resolve_isolation("bwrap")
    with pytest.raises(SandboxUnavailableError, match="isolation = 'landlock'.*no landlock here"):
        resolve_isolation("landlock")
    assert resolve_isolation("none") == "none"  # only when the policy says so


def test_bwrap_unavailable_falls_back_to_landlock(monkeypatch):
    monkeypatch.setattr(isolation, "tier_problem", lambda tier: "missing" if tier == "bwrap" else None)
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
            check = first.execute("import sys; ('numpy' in sys.modules, 'numpy' in dir())")
            assert check.result == "(True, False)"  # imported ahead, the namespace left clean
            first.execute("secret = 'session one'")
            assert second.execute("secret").error.ename == "NameError"
        finally:
            first.close()
            second.close()
        while not pool.ready:  # a replacement is being warmed
            pool._thread.join(0.05)
        warm = list(pool._ready)
    assert all(not kernel.alive for kernel in warm)  # closing the pool closes what it holds


# ----------------------------------------------------------------------------------------------
# async


async def test_async_sandbox_runs_and_cancelling_interrupts():
    async with AsyncSandbox(settings()) as sandbox:
        assert (await sandbox.execute("1 + 1")).result == "2"
        task = asyncio.create_task(sandbox.execute("import time\nfor _ in range(600):\n    time.sleep(0.05)"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await sandbox.execute("'responsive'")
        assert after.result == "'responsive'" and not after.restarted
    with pytest.raises(SandboxClosedError):
        await sandbox.execute("1")
