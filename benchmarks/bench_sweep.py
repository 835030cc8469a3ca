"""Benchmark: one sweep on this machine against the same sweep on a local Ray cluster.

    .venv/bin/python benchmarks/bench_sweep.py                  # 4 models, 500 images, 2 Ray workers
    .venv/bin/python benchmarks/bench_sweep.py --images 2000 --workers 4 --ray_cpus 8

The sweep: four checkpoints of ShuffleNet V2 ×0.5 (random weights, different seeds; a
network with stages, so ``layer_rule = "stage_ends"`` picks stage2–4), a tiny CLIP from
tests/clip_configs (random weights), five concepts, soft-WPMI, over N synthetic 224×224
JPEGs (benchmarks/bench_standard.py writes them). Each path has its own fresh cache and
result folder; both start from the same files.

Reported for each path: the load average when it started, wall seconds of ``run_sweep``
and to its first recorded batch (the Ray path's cluster start-up, ``ray.init``, apart; its
actors' start-up in), the probe passes, images decoded and CLIP image batches the sweep
counted (decoded once for the four models: N, not 4 N), the seconds the driver spent
merging the workers' parts, and the bytes of one batch's part as a worker hands it over.
Then whether the two paths wrote the same labels. Timings on a shared machine are noisy.

``--on_paper`` estimates instead a sweep of every torchvision classification model over
Broden (63,305 images) on 1, 8 and 64 GPUs, from torchvision's own per-image operation
counts and parameter counts (weights metadata), each model's ``stage_ends`` layers (their
units and map sizes, from a forward pass on the meta device), and what it measures on this
CPU: decoding and preprocessing one image for every distinct preprocessing of the 80
models, and the driver's unpickling and merging of workers' parts (CPU times of one thread,
steadier than wall times on a shared machine). The GPU's sustained
throughput is an assumption (``--gpu_tflops``), as is the CPU count per GPU node
(``--cores_per_gpu``).
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "tests", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

MODEL = "shufflenet_v2_x0_5"
MODELS = 4


def write_inputs(root: Path, images: int) -> str:
    """Probe images, concepts, the four checkpoints; returns the CLIP name."""
    import torch
    import torchvision

    from bench_standard import make_probe
    from standins import make_tiny_clip_checkpoint

    make_probe(root / "probe", images, seed=0)
    (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\n")
    for seed in range(MODELS):
        torch.manual_seed(seed)
        torch.save(torchvision.models.get_model(MODEL).state_dict(), root / f"{MODEL}_step{seed}.pt")
    return make_tiny_clip_checkpoint(root / "tiny_clip.pt")


def write_spec(root: Path, clip: str, name: str, batch_size: int) -> Path:
    spec = root / f"{name}.toml"
    spec.write_text(f'''[setup]
d_probe = "{root / 'probe'}"
concept_set = "{root / 'concepts.txt'}"
clip_model = "{clip}"
device = "cpu"
batch_size = {batch_size}
similarity_fn = "soft_wpmi"
similarity_param = {{top_k = 20}}
activation_dir = "{root / (name + '-cache')}"
result_dir = "{root / name}"

[[model]]
target_model = "{MODEL}"
target_checkpoint = "{root / (MODEL + '_step*.pt')}"
layer_rule = "stage_ends"
''')
    return spec


class MergeClock:
    """Seconds spent in PassPart.merge on the driver, and the size of one pickled batch part."""

    def __init__(self):
        from dissect_core.engine.activations import PassPart

        self.seconds, self.part_bytes, self.real = 0.0, 0, PassPart.merge
        clock = self

        def timed(part, other, top_maps):
            start = time.perf_counter()
            clock.real(part, other, top_maps)
            clock.seconds += time.perf_counter() - start
            if not clock.part_bytes and other.images_decoded:
                clock.part_bytes = len(pickle.dumps(other.to("cpu")))

        PassPart.merge = timed


def run(spec: Path, engine=None) -> tuple[float, float, object, MergeClock]:
    """Wall seconds of the sweep and to its first recorded batch, its result, its merge clock."""
    from dissect_core.engine.activations import PassPart
    from dissect_core.engine.sweep import run_sweep

    clock, first = MergeClock(), []
    start = time.perf_counter()

    def note_first_batch(stage: str, done: int, total: int) -> None:
        if stage.startswith("probe images") and done and not first:
            first.append(time.perf_counter() - start)

    result = run_sweep(spec, progress=note_first_batch, engine=engine)
    seconds = time.perf_counter() - start
    PassPart.merge = clock.real
    return seconds, first[0], result, clock


BRODEN = 63_305
CLIP_GMACS = 17.6  # open_clip ViT-B-16 image tower, per 224 px image (multiply-adds)
TOP_MAPS = 10


def stage_end_shapes(name: str) -> list[tuple[int, int]]:
    """(units, map positions) of each stage_ends layer of a torchvision model, by a forward
    pass on the meta device (no weights, no compute)."""
    import torch
    import torchvision

    from dissect_core.engine.layer_rules import stage_ends
    from dissect_core.engine.models import _imagenet_weights

    size = _imagenet_weights(name).meta["min_size"]
    kwargs = {"init_weights": False, "aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = max(224, size[0])
    with torch.device("meta"):
        try:
            model = torchvision.models.get_model(name, **kwargs).eval()
        except NotImplementedError:  # builders that compute on tensors (RegNet): build on the CPU
            model = None
    if model is None:
        model = torchvision.models.get_model(name, **kwargs).eval().to("meta")
    shapes = {}
    layers = stage_ends(model)

    def keep(layer):
        def hook(module, inputs, output) -> None:
            shapes.setdefault(layer, tuple((output[0] if isinstance(output, tuple) else output).shape))
        return hook

    hooks = [dict(model.named_modules())[layer].register_forward_hook(keep(layer)) for layer in layers]
    side = max(224, size[0])
    with torch.no_grad():
        model(torch.empty(1, 3, side, side, device="meta"))
    for hook in hooks:
        hook.remove()
    out = []
    for layer in layers:
        shape = shapes[layer]
        if len(shape) == 4:  # channels first (Swin's stages are channels last)
            units, positions = (shape[3], shape[1] * shape[2]) if "swin" in name else (shape[1], shape[2] * shape[3])
        else:  # tokens
            units, positions = shape[-1], shape[1] - 1
        out.append((units, positions))
    return out


def on_paper(gpu_tflops: float, cores_per_gpu: int) -> None:
    import io
    import statistics

    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    from dissect_core.engine.activations import LayerPart, PassPart, TopMaps
    from dissect_core.engine.models import _imagenet_weights, torchvision_model_names

    names = torchvision_model_names()
    weights = {name: _imagenet_weights(name) for name in names}
    gmacs = sum(w.meta["_ops"] for w in weights.values())
    params = sum(w.meta["num_params"] for w in weights.values())
    pooled_units = maps_values = 0
    without_stages = []
    for name in names:
        shapes = stage_end_shapes(name)
        if not shapes:
            without_stages.append(name)
        pooled_units += sum(units for units, _ in shapes)
        maps_values += sum(units * positions for units, positions in shapes)
    transforms = {repr(w.transforms()): w.transforms() for w in weights.values()}
    transforms["clip"] = open_clip.image_transform(224, is_train=False)

    # Decoding and preprocessing, one image at a time, on one core.
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(20):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((224, 224), Image.BICUBIC).save(
            buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    decode, preprocess = [], []
    for data in jpegs:  # CPU time of this process: what a core spends, whatever else shares the machine
        start = time.process_time()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        middle = time.process_time()
        tensors = [transform(image) for transform in transforms.values()]
        decode.append(middle - start)
        preprocess.append(time.process_time() - middle)
    per_image_cpu = statistics.median(decode) + statistics.median(preprocess)
    tensor_bytes = sum(t.numel() * 4 for t in tensors)

    # The driver: unpickle and merge one part per batch of 200 images: a layer of 512 units with
    # 14 × 14 maps (its pooled rows and the batch's top maps), as a worker sends it.
    batch, units = 200, 512

    def part(seed: int) -> PassPart:
        generator = torch.Generator().manual_seed(seed)
        top = TopMaps(torch.randn(units, TOP_MAPS, generator=generator),
                      torch.randint(0, BRODEN, (units, TOP_MAPS), generator=generator),
                      torch.randn(units, TOP_MAPS, 14, 14, generator=generator))
        rows = [(torch.arange(batch), torch.randn(batch, units, generator=generator))]
        return PassPart([{"layer": LayerPart(rows=rows, top=top)}], images=[torch.arange(batch)])

    payloads = [pickle.dumps(part(seed)) for seed in range(20)]
    start, whole = time.process_time(), PassPart([{}])
    for payload in payloads:
        whole.merge(pickle.loads(payload), TOP_MAPS)
    merge_bytes_per_s = sum(map(len, payloads)) / (time.process_time() - start)

    flops_per_image = 2e9 * (gmacs + CLIP_GMACS)
    pooled_bytes = 4 * pooled_units  # per image, to the driver
    maps_bytes = 4 * maps_values * TOP_MAPS / batch  # per image: each batch's top maps (k of its 200 images)
    print(f"{len(names)} torchvision models: {gmacs:,.0f} GMACs per image in all (+ CLIP ViT-B/16 {CLIP_GMACS}), "
          f"{params / 1e9:.2f} G parameters ({4 * params / 2**30:.1f} GiB in fp32, held by every actor)")
    print(f"stage_ends layers: {pooled_units:,} units in all ({len(without_stages)} models without stages: "
          f"{', '.join(without_stages)})")
    print(f"{len(transforms)} distinct preprocessings (CLIP's included); on this CPU, per image and core: decode "
          f"{1e3 * statistics.median(decode):.1f} ms, all preprocessings {1e3 * statistics.median(preprocess):.1f} ms; "
          f"{tensor_bytes / 2**20:.1f} MiB of input tensors per image through the object store")
    print(f"per image to the driver: {pooled_bytes / 2**20:.2f} MiB pooled + {maps_bytes / 2**20:.2f} MiB of "
          f"batch top maps; the driver merges {merge_bytes_per_s / 2**30:.2f} GiB/s; it ends up holding "
          f"{BRODEN * pooled_bytes / 2**30:.0f} GiB of pooled activations for Broden")
    print(f"assumed: {gpu_tflops:g} TFLOP/s sustained per GPU, {cores_per_gpu} CPU cores per GPU for decoding")
    print(f"{'GPUs':>5} {'GPU compute':>12} {'decode (CPU)':>13} {'object store in':>16} {'driver merge':>13} "
          f"{'bound by':>10}")
    for gpus in (1, 8, 64):
        compute = BRODEN * flops_per_image / (gpus * gpu_tflops * 1e12)
        decoding = BRODEN * per_image_cpu / (gpus * cores_per_gpu)
        store = BRODEN * (tensor_bytes + pooled_bytes + maps_bytes) / 2**30
        merge = BRODEN * (pooled_bytes + maps_bytes) / merge_bytes_per_s
        bound = max((compute, "GPUs"), (decoding, "decoding"), (merge, "driver"))[1]
        print(f"{gpus:>5} {compute / 60:>10.1f} m {decoding / 60:>11.1f} m {store:>12,.0f} GiB "
              f"{merge / 60:>11.1f} m {bound:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on_paper", action="store_true", help="the 80-model Broden estimate instead")
    parser.add_argument("--gpu_tflops", type=float, default=50.0, help="with --on_paper: assumed TFLOP/s per GPU")
    parser.add_argument("--cores_per_gpu", type=int, default=8, help="with --on_paper: CPU cores per GPU")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--ray_cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--workdir", default=None, help="keep the inputs here (default: a temporary folder)")
    args = parser.parse_args()
    if args.on_paper:
        on_paper(args.gpu_tflops, args.cores_per_gpu)
        return

    import ray
    import torch

    from dissect_core.engine.ray_sweep import RayEngine
    from dissect_core.runs.run_folders import load_run
    from standins import register_tiny_clip

    register_tiny_clip()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep_"))
    root.mkdir(parents=True, exist_ok=True)
    for name in ("local", "local-cache", "ray", "ray-cache"):
        shutil.rmtree(root / name, ignore_errors=True)
    clip = write_inputs(root, args.images)
    print(f"{MODELS} × {MODEL} (layer_rule stage_ends), tiny CLIP, {args.images} images of 224 px, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")

    local_load = os.getloadavg()[0]
    local_s, local_first, local, local_clock = run(write_spec(root, clip, "local", args.batch_size))
    start = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    engine = RayEngine(workers=args.workers)
    try:
        ray_load = os.getloadavg()[0]
        ray_s, ray_first, remote, ray_clock = run(write_spec(root, clip, "ray", args.batch_size), engine)
    finally:
        engine.close()
        ray.shutdown()

    print(f"{'path':<34} {'load':>5} {'wall s':>7} {'1st batch s':>11} {'passes':>6} {'decoded':>8} "
          f"{'CLIP batches':>12} {'merge s':>8} {'part MB':>8}")
    for label, load, seconds, first, result, clock in (
            ("one machine", local_load, local_s, local_first, local, local_clock),
            (f"Ray, {args.workers} actors on {args.ray_cpus} CPUs", ray_load, ray_s, ray_first, remote, ray_clock)):
        print(f"{label:<34} {load:>5.1f} {seconds:>7.1f} {first:>11.1f} {result.probe_passes:>6} "
              f"{result.images_decoded:>8} {result.clip_batches:>12} {clock.seconds:>8.2f} "
              f"{clock.part_bytes / 1e6:>8.2f}")
    print(f"Ray cluster start (ray.init): {init_s:.1f} s; Ray path overhead: {ray_s - local_s:+.1f} s "
          f"({ray_s / local_s:.2f}×)")
    print(f"Decoded once: {local.images_decoded} images for {MODELS} models (per-model passes would decode "
          f"{MODELS * args.images}); CLIP batches {local.clip_batches} = ceil({args.images} / {args.batch_size})")
    same = all(load_run(root / "local" / run.entry.folder).descriptions["description"].tolist()
               == load_run(root / "ray" / run.entry.folder).descriptions["description"].tolist()
               for run in local.runs)
    scores = max(float((load_run(root / "local" / run.entry.folder).descriptions["similarity"]
                        - load_run(root / "ray" / run.entry.folder).descriptions["similarity"]).abs().max())
                 for run in local.runs)
    print(f"Same labels on both paths: {same}; largest score difference {scores:.1e} "
          "(threads differ: matrix products round differently)")


if __name__ == "__main__":
    main()
