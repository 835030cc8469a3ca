"""CLIP models through open_clip: names, loading (offline-aware), tokens and features.

Names follow the reference (``ViT-B/16``, ``RN50``, …, meaning OpenAI's weights) or
open_clip's ``ARCH``, ``ARCH:TAG`` and ``ARCH:/path/to/checkpoint``.

Pretrained weights are resolved to a file before open_clip sees them: from the local
Hugging Face cache if they are there, downloaded if the hub is reachable, and
otherwise a :class:`MissingResourceError` within seconds that names the hub
repository and file, the cache folder and the manual fix. The file is then loaded
with the tag's settings (QuickGELU for OpenAI weights, like the reference's OpenAI
CLIP; the tag's image mean, std and interpolation), so no network access happens
inside open_clip.

Text features use the raw concept strings without a prompt template, exactly as the
reference does, and a concept longer than the context is an error rather than being
truncated silently.

Text encoding is trimmed to the concepts' length where that is exact: in a text tower
with a causal attention mask that pools the end-of-text token, the pooled feature
depends only on the tokens up to it, never on the padding after it. Concepts are then
encoded in batches sorted by token count, each cut to its longest concept (a word is
3–5 of the 77 tokens). Other towers (bidirectional attention, pooling the last or the
first position, a class token, Hugging Face text models) get the full context.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import open_clip
import torch
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import TextTransformer, text_global_pool
from PIL import Image

from dissect_core.engine import downloads
from dissect_core.choices.catalog import CLIP_ALIASES
from dissect_core.engine.device import resolve_device
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.files import file_sha256, weight_file_problem
from dissect_core.common.progress import ProgressFn, report

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".tar")
_LIST_HINT = "List them all with: python -c \"import open_clip; print(open_clip.list_pretrained())\""
_HF_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's default file name in a hub repo
_HF_SAFE_WEIGHTS = "open_clip_model.safetensors"


@dataclass
class ClipModel:
    """A loaded CLIP model with everything needed to embed images and concepts."""

    name: str  # canonical "ARCH:TAG" or "ARCH:/abs/path"
    model: Any  # open_clip CLIP, eval mode, on ``device``
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Any
    device: torch.device
    weights_id: str  # the pretrained tag, or the SHA-256 of a local checkpoint
    context_length: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype image batches must have: that of the image tower's first convolution."""
        for module in self.model.visual.modules():
            if isinstance(module, torch.nn.Conv2d):
                return module.weight.dtype
        return next(self.model.visual.parameters()).dtype


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or bool(os.altsep and os.altsep in text)
        or Path(text).suffix.lower() in CHECKPOINT_SUFFIXES
    )


def _canonical_arch(text: str) -> str:
    if text in CLIP_ALIASES:
        return CLIP_ALIASES.get(text).value
    archs = open_clip.list_models()
    for candidate in (text, text.replace("/", "-")):
        if candidate in archs:
            return candidate
    close = difflib.get_close_matches(text, CLIP_ALIASES.names() + archs, n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise InvalidInputError(
        f"Unknown CLIP model {text!r}.{hint} Use a reference name ({', '.join(CLIP_ALIASES.names())}), "
        f"an open_clip architecture such as ViT-B-16, ARCH:TAG or ARCH:/path/to/checkpoint. {_LIST_HINT}"
    )


def parse_clip_name(name: str) -> tuple[str, str]:
    """Split a CLIP name into (open_clip architecture, pretrained tag or absolute file path).

    ``ViT-B/16`` → ("ViT-B-16", "openai"); ``ViT-B-32:laion2b_s34b_b79k`` keeps its tag;
    ``ViT-B-16:/models/clip.pt`` → ("ViT-B-16", "/models/clip.pt"). Without a tag,
    "openai" is used where open_clip has it for the architecture.
    """
    arch_text, has_source, source = name.strip().partition(":")
    arch = _canonical_arch(arch_text.strip())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    source = source.strip()
    if not has_source or not source:
        if "openai" in tags:
            return arch, "openai"
        choices = f"its tags are {', '.join(tags)}" if tags else "open_clip has no pretrained weights for it"
        raise InvalidInputError(
            f"{arch} has no OpenAI weights, so name the weights as {arch}:TAG or {arch}:/path/to/checkpoint "
            f"({choices})."
        )
    if _looks_like_path(source):
        return arch, str(Path(source).expanduser().resolve())
    tag = source.lower().replace("-", "_")  # open_clip's own tag normalisation
    if tag in tags:
        return arch, tag
    close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.4)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise InvalidInputError(
        f"open_clip has no pretrained weights {source!r} for {arch}.{hint} "
        f"Its tags: {', '.join(tags) or 'none'}. {_LIST_HINT}"
    )


def _hf_candidates(filename: str) -> list[str]:
    """The files open_clip tries in a hub repo, in its order (safetensors first)."""
    filename = filename or _HF_WEIGHTS
    if filename == _HF_WEIGHTS:
        return [_HF_SAFE_WEIGHTS, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _local_arch_hint(arch: str, cfg: dict) -> str:
    """The architecture name to pair with a manually downloaded file of these weights."""
    quick = f"{arch}-quickgelu"
    if cfg.get("quick_gelu") and not arch.endswith("-quickgelu") and quick in open_clip.list_models():
        return quick  # OpenAI-style weights need QuickGELU, which only the -quickgelu config sets
    return arch


def _pretrained_file(arch: str, tag: str, cfg: dict) -> str:
    """Path of the weight file for ``arch:tag``: cached, downloaded, or a fast, clear error."""
    import huggingface_hub
    from huggingface_hub import constants as hf_constants

    if cfg.get("file"):
        return cfg["file"]
    what = f"The CLIP weight file for {arch}:{tag}"
    hf_hub = cfg.get("hf_hub", "") if open_clip.pretrained.has_hf_hub() else ""
    if hf_hub:
        repo_id, filename = os.path.split(hf_hub)
        candidates = _hf_candidates(filename)
        for candidate in candidates:
            cached = huggingface_hub.try_to_load_from_cache(repo_id, candidate)
            if isinstance(cached, str):
                return cached
        endpoint = hf_constants.ENDPOINT
        if not downloads.is_reachable(endpoint):
            file_url = f"{endpoint}/{repo_id}/resolve/main/{candidates[0]}"
            raise MissingResourceError(
                f"{what} (Hugging Face repo {repo_id}, file {' or '.join(candidates)})",
                looked_in=f"the Hugging Face cache {hf_constants.HF_HUB_CACHE}",
                how_to_fix=f"It cannot be downloaded now: {endpoint} is not reachable (offline?). "
                f"To provide it by hand, download {file_url} and pass the file as "
                f"{_local_arch_hint(arch, cfg)}:/path/to/{candidates[0]}, or copy a Hugging Face "
                f"cache that holds it into {hf_constants.HF_HUB_CACHE}.",
            )
        try:
            return open_clip.pretrained.download_pretrained(cfg)
        except (OSError, RuntimeError) as exc:
            raise MissingResourceError(
                f"{what} (Hugging Face repo {repo_id})",
                looked_in=f"the Hugging Face cache {hf_constants.HF_HUB_CACHE}",
                how_to_fix=f"Downloading it failed ({exc}). Try again, or download "
                f"{endpoint}/{repo_id}/resolve/main/{candidates[0]} and pass it as "
                f"{_local_arch_hint(arch, cfg)}:/path/to/{candidates[0]}.",
            ) from exc
    url = cfg.get("url", "")
    if url:
        # open_clip's own cache for URL-hosted weights, so either tool finds the file.
        dest = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        expected = f"sha256:{url.split('/')[-2]}" if "openaipublic" in url else None  # OpenAI URLs carry the SHA-256
        return str(
            downloads.download_file(
                url,
                dest,
                what=f"{what} ({dest.name})",
                how_to_fix=f"Or pass the file as {_local_arch_hint(arch, cfg)}:/path/to/{dest.name}.",
                known_hash=expected,
            )
        )
    raise InvalidInputError(f"open_clip lists no download source for {arch}:{tag}; pass a checkpoint file instead.")


def load_clip(name: str = "ViT-B/16", device: str | torch.device | None = None) -> ClipModel:
    """Load a CLIP model: fp16 on CUDA (as the reference's OpenAI loader), fp32 on the CPU."""
    arch, source = parse_clip_name(name)
    dev = resolve_device(None if device is None else str(device))
    options: dict[str, Any] = {}
    if _looks_like_path(source):
        path = Path(source)
        if not path.is_file():
            raise MissingResourceError(
                f"The CLIP checkpoint {path.name}",
                looked_in=str(path),
                how_to_fix="Check the file path after the colon in ARCH:/path/to/checkpoint.",
            )
        checkpoint, weights_id = str(path), file_sha256(path)
    else:
        cfg = open_clip.get_pretrained_cfg(arch, source)
        checkpoint, weights_id = _pretrained_file(arch, source, cfg), source
        options = {
            "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
            "image_mean": cfg.get("mean"),
            "image_std": cfg.get("std"),
            "image_interpolation": cfg.get("interpolation"),
            "image_resize_mode": cfg.get("resize_mode"),
        }
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch,
            pretrained=checkpoint,
            precision="fp16" if dev.type == "cuda" else "fp32",
            device=dev,
            weights_only=True,
            **options,
        )
    except Exception as exc:  # the file is untrusted: its readers (torch, safetensors, numpy) raise many kinds
        raise InvalidInputError(
            f"Cannot load CLIP model {arch}: {weight_file_problem(Path(checkpoint), exc)}. "
            "Check that the file holds weights for this architecture (a plain state_dict or "
            "safetensors file readable with weights_only=True)."
        ) from exc
    tokenizer = open_clip.get_tokenizer(arch)
    context_length = int(getattr(tokenizer, "context_length", None) or model.context_length)
    return ClipModel(f"{arch}:{source}", model.eval(), preprocess, tokenizer, dev, weights_id, context_length)


def _token_counts(tokenizer: Any, texts: Sequence[str]) -> Optional[list[int]]:
    """Token counts including start and end tokens, or None where the tokenizer offers no way.

    open_clip's SimpleTokenizer (all OpenAI and most open_clip models) is counted
    exactly as it tokenizes. HF-backed tokenizers are counted with the wrapped
    ``transformers`` tokenizer on the raw text (open_clip only normalises whitespace
    first, which does not change the count).
    """
    if isinstance(tokenizer, SimpleTokenizer):
        return [len(tokenizer.encode(text)) + 2 for text in texts]
    inner = getattr(tokenizer, "tokenizer", None)
    if callable(inner):
        encoded = inner(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]
    return None


def check_context_length(clip: ClipModel, concepts: Sequence[str]) -> None:
    """Refuse concepts longer than the text context instead of letting the tokenizer cut them."""
    counts = _token_counts(clip.tokenizer, concepts)
    if counts is None:
        return
    too_long = [(text, n) for text, n in zip(concepts, counts) if n > clip.context_length]
    if too_long:
        shown = "; ".join(f"{text[:80]!r} ({n} tokens)" for text, n in too_long[:5])
        raise InvalidInputError(
            f"{len(too_long)} concept(s) are longer than the {clip.context_length}-token text context of "
            f"{clip.name} (counting the start and end tokens) and would be cut off: {shown}"
            f"{' …' if len(too_long) > 5 else ''}. Shorten them."
        )


@dataclass
class CausalTextTower:
    """The parts of an open_clip text transformer whose end-of-text feature ignores padding."""

    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    attn_mask: torch.Tensor
    ln_final: torch.nn.Module
    text_projection: Any  # a matrix, an nn.Linear or None
    pool_type: str  # "argmax" (the highest token id, OpenAI's end-of-text) or "eos"
    eos_id: Optional[int]

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each row's feature is read from (as open_clip's text_global_pool)."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.eos_id).int().argmax(dim=-1)

    def encode(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """open_clip's text forward on the first ``length`` positions only."""
        tokens = tokens[:, :length]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, torch.nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection


def causal_text_tower(model: Any) -> Optional[CausalTextTower]:
    """The model's text tower where trimming the padding is exact, else None.

    Exact means: open_clip's own text forward (CLIP, or CustomTextCLIP with a plain
    TextTransformer; subclasses may change it), a causal mask (lower triangle, −inf
    above the diagonal), no class token, no padding mask, and the feature read at the
    end-of-text token (pool types ``argmax`` and ``eos``).
    """
    if type(model).encode_text is CLIP.encode_text:
        owner, pool_type, eos_id = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    elif (type(model).encode_text is CustomTextCLIP.encode_text and type(model.text) is TextTransformer
          and model.text.cls_emb is None and not model.text.use_pad_mask):
        owner, pool_type, eos_id = model.text, model.text.pool_type, model.text.eos_id
    else:
        return None
    mask = getattr(owner, "attn_mask", None)
    if pool_type not in ("argmax", "eos") or (pool_type == "eos" and eos_id is None):
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return None
    causal = torch.full(mask.shape, float("-inf"), dtype=mask.dtype, device=mask.device).triu_(1)
    if not torch.equal(mask, causal):
        return None
    return CausalTextTower(owner.token_embedding, owner.positional_embedding, owner.transformer, mask,
                           owner.ln_final, owner.text_projection, pool_type, eos_id)


def encode_texts(
    clip: ClipModel,
    texts: Sequence[str],
    batch_size: int = 200,
    progress: Optional[ProgressFn] = None,
) -> torch.Tensor:
    """Unnormalised text features (M × d, float32, CPU) of the raw strings, no prompt template.

    Rows are in the order of ``texts``; where the text tower allows it (see
    :func:`causal_text_tower`) batches are sorted by length and trimmed.
    """
    texts = list(texts)
    if not texts:
        raise InvalidInputError("There are no concepts to encode.")
    check_context_length(clip, texts)
    stage = f"text features {clip.name}"
    tokens = clip.tokenizer(texts)
    tower = causal_text_tower(clip.model)
    if tower is not None:
        lengths = tower.pooled_positions(tokens) + 1
        order = torch.argsort(lengths, stable=True)
    else:
        order = torch.arange(len(texts))
    batches = []
    report(progress, stage, 0, len(texts))
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokens[rows].to(clip.device)
            if tower is not None:
                features = tower.encode(batch, int(lengths[rows].max()))
            else:
                features = clip.model.encode_text(batch)
            batches.append(features.float())  # kept on the device: no wait for each batch
            report(progress, stage, min(start + batch_size, len(texts)), len(texts))
    result = torch.empty(len(texts), batches[0].shape[1])
    result[order] = torch.cat(batches).cpu()
    return result


def encode_images(clip: ClipModel, batch: torch.Tensor) -> torch.Tensor:
    """Unnormalised image features (B × d, float32) of a preprocessed batch, left on
    CLIP's device so that a pass over many batches does not wait for each one."""
    with torch.inference_mode():
        features = clip.model.encode_image(batch.to(clip.device, dtype=clip.dtype, non_blocking=True))
    return features.float()
