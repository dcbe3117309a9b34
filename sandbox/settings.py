"""The sandbox's settings: the ``[sandbox]`` section of an agent's policy, usable on their own.

>>> SandboxSettings(memory_mb=4096).timeout_s
60.0
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxSettings(BaseModel):
    """How kernels are confined and bounded. Unknown keys are errors, so a typo never loosens a limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolation: Literal["auto", "bwrap", "landlock", "none"] = Field(
        "auto", description="auto: the strongest that works; none: no OS isolation (must be explicit)")
    python: str | None = Field(None, description="the kernel's interpreter; by default the one the agent runs on "
                                                 "(its venv's packages included)")
    memory_mb: int = Field(2048, ge=512, description="address-space limit of the kernel (numpy+pandas need ~500)")
    max_processes: int = Field(64, ge=16, description="processes and threads of one kernel")
    max_file_mb: int = Field(256, ge=1, description="largest file the kernel may write")
    max_open_files: int = Field(256, ge=64, description="open files of one kernel")
    cpu_seconds: int = Field(300, ge=1, description="CPU budget of one kernel (it is restarted past it)")
    timeout_s: float = Field(60.0, gt=0, description="wall time of one cell before interrupt")
    interrupt_grace_s: float = Field(3.0, gt=0, description="wait after an interrupt before restarting")
    startup_timeout_s: float = Field(60.0, gt=0, description="wall time for a kernel to start")
    output_bytes: int = Field(20_000, ge=256, description="characters of output kept per stream and cell")
    tmp_mb: int = Field(256, ge=16, description="size of the kernel's private /tmp (bubblewrap tier)")
    disk_mb: int = Field(1024, ge=16, description="bytes the kernel's own /mnt/data may hold (as root; not a "
                                                  "--workdir of the user's); they count as memory too")
    max_files: int = Field(10_000, ge=100, description="files and folders the kernel's own /mnt/data may hold (as root)")
    network: bool = Field(False, description="let code reach the network")
    pool_size: int = Field(1, ge=0, description="kernels started ahead")
    pool_refill: bool = Field(True, description="start a new warm kernel when one is claimed, for the next session "
                                                "(`agent run`, one session, turns it off)")
    preload: list[str] = Field(default_factory=lambda: ["numpy", "sympy", "matplotlib.pyplot", "pandas"],
                               description="modules warm pool kernels import ahead, in a thread: cells need not wait for them")
