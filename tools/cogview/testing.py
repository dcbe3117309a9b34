"""Random-weight pipelines built from configs, for tests and benchmarks: nothing is downloaded.

``save_tiny_cogview4(path)`` and ``save_tiny_stable_diffusion(path)`` write real diffusers pipeline
folders (a few MB, seconds to build) that the tool then loads by path, through the same code as a
real model. :func:`random_cogview4` builds a pipeline of CogView4-6B's shape with random weights
for timing: compute per image does not depend on the weights' values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from agent.protocol.glm4 import SPECIAL_TOKENS

# CogView4-6B's denoiser (the published config): 28 blocks of 32 heads x 128, GLM-4 text width 4096.
COGVIEW4_6B_TRANSFORMER = dict(patch_size=2, in_channels=16, out_channels=16, num_layers=28, attention_head_dim=128,
                               num_attention_heads=32, text_embed_dim=4096, time_embed_dim=512, condition_dim=256,
                               pos_embed_max_size=128, sample_size=128, rope_axes_dim=(256, 256))
# Its 16-channel VAE (shape as published, to our knowledge; it costs little next to the transformer).
COGVIEW4_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 512, 1024, 1024],
                    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    layers_per_block=3, sample_size=1024, scaling_factor=1.0, shift_factor=0.0,
                    use_quant_conv=False, use_post_quant_conv=False)
COGVIEW4_SCHEDULER = dict(base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True,
                          time_shift_type="linear")


def byte_level_tokenizer(special_tokens: list[str], prefix: Sequence[str] = (), suffix: Sequence[str] = (),
                         **kwargs: Any) -> Any:
    """A fast tokenizer over raw bytes (no merges, so it needs no training) with the given special tokens,
    adding ``prefix`` and ``suffix`` around every text (see :func:`wrap_texts`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(special_tokens))
    return wrap_texts(PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs), prefix, suffix)


def wrap_texts(tokenizer: Any, prefix: Sequence[str] = (), suffix: Sequence[str] = ()) -> Any:
    """Make ``tokenizer`` add special tokens around every text, as real ones do (GLM-4's ``[gMASK]<sop>``,
    CLIP's start and end). Pipelines rely on it: CogView4 encodes the empty negative prompt."""
    from tokenizers import processors

    around = [*prefix, "$A", *suffix]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(around), pair=" ".join([*around, "$B"]),
        special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in {*prefix, *suffix}])
    return tokenizer


def glm4_tokenizer(base: Any = None) -> Any:
    """A GLM-4-style tokenizer as CogView4 uses it: ``[gMASK]<sop>`` first, padding on the left.

    ``base``: a fast tokenizer that has GLM-4's special tokens; by default a byte-level one.
    """
    if base is None:
        base = byte_level_tokenizer(list(SPECIAL_TOKENS), eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    base.padding_side = base.init_kwargs["padding_side"] = "left"  # init_kwargs: what save_pretrained keeps
    return wrap_texts(base, prefix=["[gMASK]", "<sop>"])


def tiny_glm_encoder(tokenizer: Any, hidden_size: int = 32, layers: int = 2) -> Any:
    """A GLM-4-architecture language model (``GlmForCausalLM``) of the given width, random weights."""
    from transformers import GlmConfig, GlmForCausalLM

    config = GlmConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=hidden_size // 4, pad_token_id=tokenizer.pad_token_id)
    return GlmForCausalLM(config)


def tiny_cogview4(tokenizer: Any = None) -> Any:
    """A CogView4Pipeline a few MB big; its native size is 32x32 pixels.

    ``tokenizer``: any GLM-4-style fast tokenizer (by default :func:`glm4_tokenizer`).
    """
    import torch
    from diffusers import AutoencoderKL, CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    tokenizer = tokenizer or glm4_tokenizer()
    return CogView4Pipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_glm_encoder(tokenizer),
        transformer=CogView4Transformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                               attention_head_dim=4, num_attention_heads=4, text_embed_dim=32,
                                               time_embed_dim=8, condition_dim=4, sample_size=16),
        vae=AutoencoderKL(block_out_channels=[32, 64], latent_channels=4, sample_size=32,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
        scheduler=FlowMatchEulerDiscreteScheduler(**COGVIEW4_SCHEDULER),
    )


def tiny_stable_diffusion() -> Any:
    """A StableDiffusionPipeline (CLIP text encoder, UNet, DDIM) a few MB big; native size 64x64."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = byte_level_tokenizer(["<|startoftext|>", "<|endoftext|>"], prefix=["<|startoftext|>"],
                                     suffix=["<|endoftext|>"], bos_token="<|startoftext|>",
                                     eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], latent_channels=4, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_cogview4(path: str | Path, tokenizer: Any = None) -> Path:
    """Write a tiny CogView4 pipeline folder (``save_pretrained``) and return its path."""
    tiny_cogview4(tokenizer).save_pretrained(path)
    return Path(path)


def save_tiny_stable_diffusion(path: str | Path) -> Path:
    """Write a tiny Stable Diffusion pipeline folder (``save_pretrained``) and return its path."""
    tiny_stable_diffusion().save_pretrained(path)
    return Path(path)


def random_cogview4(device: str = "cuda", dtype: Any = None, text_layers: int = 2, **transformer: Any) -> Any:
    """A CogView4Pipeline with CogView4-6B's transformer and VAE shapes and random weights.

    The text encoder is a 2-layer GLM of the real width (4096): it runs once per image, while the
    6B transformer runs twice per step (classifier-free guidance), so it barely changes the time.
    ``transformer``: config overrides (``num_layers=1`` for a quick check on the CPU).
    """
    import torch
    from diffusers import AutoencoderKL, CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    tokenizer = glm4_tokenizer()
    with torch.device(device):  # random init on the GPU: seconds, where 6B weights on the host take minutes
        pipe = CogView4Pipeline(
            tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(**COGVIEW4_SCHEDULER),
            transformer=CogView4Transformer2DModel(**{**COGVIEW4_6B_TRANSFORMER, **transformer}),
            vae=AutoencoderKL(**COGVIEW4_VAE),
            text_encoder=tiny_glm_encoder(tokenizer, hidden_size=4096, layers=text_layers))
    return pipe.to(device, dtype or torch.bfloat16)  # type: ignore[attr-defined]  # diffusers' own typing
