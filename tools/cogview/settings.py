"""The ``cogview`` tool's settings: its policy section, ``[cogview]``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CogViewSettings(BaseModel):
    """The ``[cogview]`` section: which pipeline draws, and the bounds on every image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("THUDM/CogView4-6B", description="a diffusers text-to-image id or a local pipeline folder")
    max_width: int = Field(2048, ge=64, description="widest image the model may ask for")
    max_height: int = Field(2048, ge=64, description="tallest image the model may ask for")
    max_steps: int = Field(50, ge=1, description="caps the denoising steps of every image")
    cpu_offload: bool = Field(False, description="keep weights in RAM and move each part to the GPU when it runs")
    steps: int | None = Field(None, ge=1, description="denoising steps; by default the model family's own")
    guidance_scale: float | None = Field(None, ge=0, description="by default the model family's own")
    width: int | None = Field(None, ge=16, description="default width; by default the model's native size")
    height: int | None = Field(None, ge=16, description="default height; by default the model's native size")
    cpu_max_gb: float = Field(8.0, gt=0, description="largest weights (GB on disk) run on the CPU when there is no GPU")
