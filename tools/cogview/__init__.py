"""The ``cogview`` built-in tool: text-to-image with a local diffusers pipeline, warm across calls.

>>> from tools.cogview import CogViewTool
>>> CogViewTool().parse_body("A red panda reading a map")
{'prompt': 'A red panda reading a map'}
"""

from .pipelines import CACHE, CogViewError, Family, PipelineCache, WarmPipeline
from .tool import CogViewTool

__all__ = ["CACHE", "CogViewError", "CogViewTool", "Family", "PipelineCache", "WarmPipeline"]
