"""The three model families: registry, assembly from smoke stand-ins, loading of real checkpoints.

| family               | class (transformers)               | vision tower                 |
| -------------------- | ---------------------------------- | ---------------------------- |
| `paligemma`          | PaliGemmaForConditionalGeneration  | SigLIP                       |
| `gemma3`             | Gemma3ForConditionalGeneration     | SigLIP                       |
| `conceptclip_gemma3` | Gemma3ForConditionalGeneration     | ConceptCLIP image encoder    |
| `gemma3_text`        | Gemma3ForConditionalGeneration     | none: the text-only control  |

The text-only control is Gemma3 (the same LM, LoRA and recipe) trained and evaluated without any
image: no image token, no pixels. It is the baseline an image-using model has to beat on what only
the frame shows.

How ConceptCLIP is joined to Gemma3 (the paper does not say; this is our choice): ConceptCLIP's
image encoder replaces Gemma3's SigLIP vision tower. Its patch features (SigLIP-style, 1152 wide,
the width of Gemma3's SigLIP) are average-pooled to the patch grid Gemma3's projector expects and
then go through Gemma3's own multimodal projector (RMS norm, average pooling to
``mm_tokens_per_image`` tokens, linear map into the LM). The encoder is frozen; the projector is
trained with the LoRA adapter. In smoke the ConceptCLIP stand-in has the same vision config as the
SigLIP stand-in, so it loads ``strict=True`` into Gemma3's vision tower and the pooling is the identity.

Real checkpoints (paper profile) come from a local folder or the local Hugging Face cache only
(``local_files_only=True``); a missing one fails at once naming what to place where, unless
``allow_download`` (profile key ``vlm_allow_download``) is set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("paligemma", "gemma3", "conceptclip_gemma3", "gemma3_text")


@dataclass(frozen=True)
class Family:
    name: str
    label: str              # as the paper names it
    architecture: str       # transformers model_type of the VLM
    vision: str             # which stand-in / checkpoint gives the vision tower
    path_key: str           # profile key of the local checkpoint (paper profile)
    text_only: bool = False  # trained and evaluated without the image (the control)


REGISTRY: dict[str, Family] = {
    "paligemma": Family("paligemma", "PaliGemma2", "paligemma", "siglip", "vlm_paligemma_path"),
    "gemma3": Family("gemma3", "Gemma3", "gemma3", "siglip", "vlm_gemma3_path"),
    "conceptclip_gemma3": Family("conceptclip_gemma3", "ConceptCLIP-Gemma3", "gemma3", "conceptclip", "vlm_gemma3_path"),
    "gemma3_text": Family("gemma3_text", "Gemma3 text-only", "gemma3", "siglip", "vlm_gemma3_path", text_only=True),
}


class CheckpointMissing(FileNotFoundError):
    """A real checkpoint that is not on this machine; the message says what to place where."""


def family(name: str) -> Family:
    if name not in REGISTRY:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return REGISTRY[name]


# ------------------------------------------------------------------ smoke: processors and assembly
def make_processor(arch: str, tokenizer, image_proc, image_tokens: int):
    """PaliGemma or Gemma3 processor over the shared tokenizer (PaliGemma's adds <loc>/<seg> tokens once)."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PaliGemmaProcessor

    if arch == "paligemma":
        return PaliGemmaProcessor(image_processor=image_proc, tokenizer=tokenizer)
    size = image_proc.size["height"]
    g3 = Gemma3ImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                              do_pan_and_scan=False, do_convert_rgb=True)
    return Gemma3Processor(image_processor=g3, tokenizer=tokenizer, image_seq_length=image_tokens)


def vlm_config(arch: str, text_config, vision_config, tokenizer, image_tokens: int):
    """The VLM config that holds the stand-in LM and vision tower (text and vision configs as pretrained)."""
    from transformers import Gemma3Config, PaliGemmaConfig

    if arch == "paligemma":
        cfg = PaliGemmaConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                              image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                              projection_dim=text_config.hidden_size)
        cfg.text_config = text_config   # keep the Gemma3 text config (PaliGemma accepts it; strict load below)
        cfg.vision_config.projection_dim = text_config.hidden_size
    else:
        cfg = Gemma3Config(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                           mm_tokens_per_image=image_tokens, boi_token_index=tokenizer.boi_token_id,
                           eoi_token_index=tokenizer.eoi_token_id, image_token_index=tokenizer.image_token_id)
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                            tokenizer.bos_token_id)
    return cfg


def assemble(name: str, lm_folder: Path, vision_folder: Path, image_tokens: int):
    """(model, processor): a VLM of family ``name`` from the pretrained LM and SigLIP stand-in folders.

    Both parts load ``strict=True``; the projector is new (Gemma3's starts at zero) and is trained
    with the adapter. PaliGemma needs one image token per patch, Gemma3 pools to ``image_tokens``.
    """
    from transformers import (AutoModelForImageTextToText, AutoTokenizer, Gemma3ForCausalLM, SiglipImageProcessor,
                              SiglipVisionModel)

    from cag_utils.vlm.tokenizer import family_tokenizer

    fam = family(name)
    tokenizer = family_tokenizer(AutoTokenizer.from_pretrained(lm_folder), fam.architecture)
    lm = Gemma3ForCausalLM.from_pretrained(lm_folder)
    vision = SiglipVisionModel.from_pretrained(vision_folder)
    image_proc = SiglipImageProcessor.from_pretrained(vision_folder)
    vc = vision.config
    image_proc.image_seq_length = (vc.image_size // vc.patch_size) ** 2
    tokens = image_proc.image_seq_length if fam.architecture == "paligemma" else image_tokens
    processor = make_processor(fam.architecture, tokenizer, image_proc, tokens)
    if len(tokenizer) > lm.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the LM only {lm.config.vocab_size}: "
                         "size the LM from the PaliGemma processor's tokenizer (see stage.pretrained_parts)")
    torch.manual_seed(0)   # the new projector: same start on every run
    model = AutoModelForImageTextToText.from_config(vlm_config(fam.architecture, lm.config, vc, tokenizer, tokens))
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    model.model.vision_tower.load_state_dict(vision.state_dict(), strict=True)
    if fam.architecture == "paligemma":
        model.config.text_config.attn_implementation = "eager"
    return model.eval(), processor


# ------------------------------------------------------------------ loading (both profiles)
def _local(path_or_id: str, what: str, key: str, allow_download: bool) -> str:
    """A local folder, or a hub id found in the local HF cache; else CheckpointMissing naming what to place where."""
    if not path_or_id:
        raise CheckpointMissing(f"{what}: profile key {key!r} is empty. Place the checkpoint folder (config.json, "
                                f"*.safetensors, processor and tokenizer files) on this machine and set {key}: <folder>.")
    if Path(path_or_id).is_dir():
        return str(path_or_id)
    if allow_download:
        return path_or_id
    from huggingface_hub import try_to_load_from_cache

    try:   # a hub id ("owner/name") whose files are in the local cache
        cached = isinstance(try_to_load_from_cache(path_or_id, "config.json"), str)
    except ValueError:   # a path that does not exist is not a valid hub id either
        cached = False
    if cached:
        return path_or_id
    raise CheckpointMissing(
        f"{what}: {path_or_id!r} ({key}) is neither a local folder nor in the local Hugging Face cache. Place the "
        f"checkpoint folder there (or run `huggingface-cli download {path_or_id}` on a machine with access and copy the "
        f"cache), or set vlm_allow_download: true to let transformers download it. Nothing is downloaded by default.")


def load_vlm(path_or_id: str, *, key: str = "vlm_*_path", allow_download: bool = False, dtype: Any = None):
    """(model, processor) through ``AutoModelForImageTextToText`` / ``AutoProcessor``: a local folder
    (a smoke stand-in or a real PaliGemma2 / Gemma3 checkpoint) or the local HF cache."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    src = _local(path_or_id, "vision-language model", key, allow_download)
    kw = {"local_files_only": not allow_download}
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=dtype, **kw)
    return model.eval(), AutoProcessor.from_pretrained(src, **kw)


class PooledPatchEncoder(torch.nn.Module):
    """A foreign image encoder as Gemma3's vision tower: resize the pixels to the encoder's own size,
    take its patch features (B, n, d) and average-pool them to the (grid x grid) patches Gemma3's
    projector expects. Frozen; returns an object with ``last_hidden_state`` like SiglipVisionModel."""

    def __init__(self, encoder: torch.nn.Module, image_size: int, grid: int):
        super().__init__()
        self.encoder, self.image_size, self.grid = encoder.requires_grad_(False), image_size, grid

    def forward(self, pixel_values: torch.Tensor, **_: Any):
        from transformers.modeling_outputs import BaseModelOutput

        x = torch.nn.functional.interpolate(pixel_values, size=(self.image_size,) * 2, mode="bilinear",
                                            align_corners=False)
        h = self.encoder(pixel_values=x).last_hidden_state            # (B, n, d)
        side = int(round(h.shape[1] ** 0.5))
        h = h[:, -side * side:].transpose(1, 2).reshape(h.shape[0], h.shape[2], side, side)
        h = torch.nn.functional.adaptive_avg_pool2d(h, self.grid)      # (B, d, grid, grid)
        return BaseModelOutput(last_hidden_state=h.flatten(2).transpose(1, 2))


def load_conceptclip_vision(path: str, allow_download: bool = False, trust_remote_code: bool = False):
    """ConceptCLIP's image encoder from a local folder in its published format (``AutoModel`` with the
    repository's code; ``vlm_conceptclip_trust_remote_code``), or any SigLIP(-vision) folder. Returns
    (encoder with ``forward(pixel_values) -> last_hidden_state``, its image size)."""
    from transformers import AutoConfig, AutoModel, SiglipVisionModel

    src = _local(path, "ConceptCLIP image encoder", "vlm_conceptclip_path", allow_download)
    kw = {"local_files_only": not allow_download}
    config = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code, **kw)
    if config.model_type in ("siglip", "siglip_vision_model"):
        enc = SiglipVisionModel.from_pretrained(src, **kw)
        return enc, enc.config.image_size
    model = AutoModel.from_pretrained(src, trust_remote_code=trust_remote_code, **kw)
    for attr in ("vision_model", "visual", "image_encoder"):
        if hasattr(model, attr):
            enc = getattr(model, attr)
            size = getattr(getattr(config, "vision_config", config), "image_size", 384)
            return enc, int(size)
    raise ValueError(f"{src}: no vision_model / visual / image_encoder in {type(model).__name__}; "
                     "adapt build.load_conceptclip_vision to this checkpoint's layout")


def load_family(name: str, cfg: dict[str, Any], smoke_folder: Path | None = None, dtype: Any = None):
    """(model, processor) of a family: the assembled stand-in folder in smoke, the profile's checkpoints
    otherwise (for ``conceptclip_gemma3``, Gemma3 with its vision tower replaced, see the module docstring)."""
    fam = family(name)
    allow = bool(cfg.get("vlm_allow_download", False))
    if smoke_folder is not None:
        return load_vlm(str(smoke_folder), key=f"stand-in {name}", dtype=dtype)
    model, processor = load_vlm(cfg[fam.path_key], key=fam.path_key, allow_download=allow, dtype=dtype)
    if fam.vision == "conceptclip":
        enc, size = load_conceptclip_vision(cfg["vlm_conceptclip_path"], allow,
                                            bool(cfg.get("vlm_conceptclip_trust_remote_code", False)))
        vc = model.config.vision_config
        model.model.vision_tower = PooledPatchEncoder(enc.to(model.dtype), size, vc.image_size // vc.patch_size)
    return model, processor
