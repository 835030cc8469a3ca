"""Sweeps on a Ray cluster: ``dissect sweep SPEC --ray [ADDRESS]``
(``pip install 'clip-dissect-explorer[ray]'``).

:class:`RayEngine` runs a sweep's heavy stages on Ray, with the results of the one-machine
path (``sweep.LocalEngine``):

* the probe pass as a Ray Data pipeline: one row per probe batch (``batch_size`` images,
  the batches of the one-machine pass); CPU tasks read, decode and preprocess each batch
  (each image once, each distinct preprocessing once); a pool of actors, each holding
  every target model and CLIP (loaded once, in ``__init__``), records a batch per call
  and returns its :class:`~dissect_core.activations.PassPart` (pooled activations, the
  batch's top maps, threshold samples, CLIP features). The driver merges the parts as
  they stream in; parts merge in any order into exactly what one pass gives. A call
  keeps no state between batches, so when an actor dies Ray restarts it and retries
  the batch, and the result is unchanged.
* the similarity and quality stages as Ray tasks, one per model and layer; the driver
  stores their results in the cache, from which ``pipeline.label_units`` writes the runs.

Actors take one GPU each where the run's device is CUDA; on CPUs they take a share of a
CPU small enough that reading and decoding always keep one (on a 2-CPU machine, two
actors of one CPU each would leave the read tasks waiting forever).

The driver (this process) needs the probe images, the cache and result folders; on a
cluster, the workers need the same paths to the probe images (a shared file system), or
run the sweep on the cluster (``ray job submit -- dissect sweep SPEC --ray auto``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import socket
import time
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch

from dissect_core.choices.layouts import LAYOUTS
from dissect_core.common.errors import InvalidInputError
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.activations import PassPart, ProbePass, ProbeRecorder, TargetLayers
from dissect_core.engine.pipeline import layer_scoring
from dissect_core.engine.probe_loading import ProbeDataset, collate_probe_batch
from dissect_core.engine.probe_sets import ProbeSet

INSTALL_HINT = "pip install 'clip-dissect-explorer[ray]' (or pip install 'ray[data]==2.60.*')"
CONNECT_TIMEOUT_S = 5.0  # for an address that does not answer


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data comes with the 'data' extra)
    except ImportError:
        raise InvalidInputError(f"--ray needs Ray with Ray Data, which is not installed: {INSTALL_HINT}.") from None
    return ray


def _check_answers(address: str) -> None:
    """Fail in seconds where nothing listens at ``address`` (Ray itself retries for long)."""
    where = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = where.hostname, where.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise InvalidInputError(f"Ray address {address!r} is not HOST:PORT: use auto, ray://HOST:PORT (the "
                                "cluster's client port, 10001 by default) or HOST:PORT (its GCS port).")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise InvalidInputError(
            f"No Ray cluster answers at {address} ({error.strerror or error}). Check the address and that the "
            "cluster is up (ray status on its head node), or leave the address out for a Ray on this machine."
        ) from None


def connect(address: Optional[str]) -> bool:
    """Connect this process to Ray: the cluster already initialised here, a new local one
    (``address`` None), or ``address``. Returns whether a connection was made here (and is
    to be closed by the caller)."""
    ray = _ray()
    if address not in (None, "auto"):
        _check_answers(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except ConnectionError as error:
        raise InvalidInputError(
            f"No Ray cluster to connect to at {address}: {error} Start one (ray start --head) or leave the "
            "address out for a Ray on this machine.") from None
    return True


def _quiet_ray_data() -> None:
    """Progress goes through the sweep's callback, not Ray Data's bars and logs."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- the probe pass


def _decode_batch(row: dict, refs: list, batch_size: int) -> dict:
    """A Ray Data task: probe batch ``row["id"]`` read, decoded and preprocessed, as the
    one-machine loader gives it (``probe_data.ProbeBatch``)."""
    import ray

    probe, transforms = ray.get(refs[0])
    start = int(row["id"]) * batch_size
    dataset = ProbeDataset(probe, transforms)
    batch = collate_probe_batch([dataset[index] for index in range(start, min(start + batch_size, len(probe)))])
    return {"payload": pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)}


class _BatchRecorder:
    """A Ray Data actor: every target model and CLIP, loaded once, recording one probe
    batch per call. It keeps nothing between calls, so a retried batch gives the same part."""

    def __init__(self, refs: list, pool_mode: str, top_maps: int, n_images: int, device: str):
        import ray

        targets, clip = ray.get(refs[0])
        # Layouts are compared by identity (``layout is FLAT``): take this process's own.
        targets = [TargetLayers(target.model, {layer: LAYOUTS.get(layout.name).value
                                               for layer, layout in target.layouts.items()}) for target in targets]
        device = torch.device(device)
        if clip is not None:
            clip = dataclasses.replace(clip, model=clip.model.to(device), device=device)
        self.recorder = ProbeRecorder(targets, clip, pool_mode, top_maps, n_images, device).__enter__()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [pickle.dumps(self.recorder.record(pickle.loads(payload)).to(torch.device("cpu")),
                              protocol=pickle.HIGHEST_PROTOCOL) for payload in rows["payload"]]
        return {"payload": np.array(parts, dtype=object)}


def _score_layer(scoring, best, need_quality: bool, image_features: torch.Tensor, text_features: torch.Tensor
                 ) -> bytes:
    """A Ray task: one layer's best concepts and, where asked, quality figures (None where
    they do not apply; ``pipeline.label_units`` then says why), pickled: arrays Ray hands
    over itself are read-only views of its object store."""
    scoring = dataclasses.replace(scoring, text_features=text_features,
                                  image_features=image_features if scoring.image_features is None
                                  else scoring.image_features)
    best = best if best is not None else scoring.best()
    quality = None
    if need_quality:
        try:
            quality = scoring.quality(best)
        except InvalidInputError:
            quality = None
    return pickle.dumps((best, quality), protocol=pickle.HIGHEST_PROTOCOL)


class RayEngine:
    """Runs a sweep's probe pass and scoring on Ray (see the module docstring)."""

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None):
        if workers is not None and workers < 1:
            raise InvalidInputError(f"--ray_workers must be at least 1, not {workers}.")
        self.ray = _ray()
        self.workers = workers
        self.started_here = connect(address)
        _quiet_ray_data()

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False

    def actors(self, device: torch.device) -> tuple[int, dict[str, float]]:
        """How many actors, and the resources of each."""
        resources = self.ray.cluster_resources()
        if device.type == "cuda":
            gpus = int(resources.get("GPU", 0))
            if gpus == 0:
                raise InvalidInputError("`device` is cuda, but the Ray cluster has no GPU: use cpu (or auto), "
                                        "or add GPU nodes to the cluster.")
            return self.workers or gpus, {"num_gpus": 1}
        cpus = resources.get("CPU", 1)
        workers = self.workers or max(1, int(cpus // 2))
        # Leave at least one CPU to the read-and-decode tasks, or the pipeline waits forever.
        share = min(1.0, max(cpus - 1, 0.5) / workers)
        return workers, {"num_cpus": math.floor(share * 100) / 100}

    def probe_pass(self, probe: ProbeSet, *, targets: Sequence[TargetLayers] = (), clip=None,
                   pool_mode: str = "avg", top_maps: int = 10, batch_size: int = 200,
                   device: torch.device = torch.device("cpu"), num_workers: Optional[int] = None,
                   decoder: str = "pil", progress: Optional[ProgressFn] = None) -> ProbePass:
        """``activations.record_probe_pass`` on the cluster (``num_workers`` does not apply:
        Ray sizes the decoding)."""
        ray = self.ray
        if decoder != "pil":
            raise InvalidInputError(f"With --ray, images are decoded by Pillow in CPU tasks: set decoder = "
                                    f"\"pil\" (not {decoder!r}), or run the sweep without --ray.")
        layout = ProbeRecorder(targets, clip, pool_mode, top_maps, len(probe), device)  # transforms and names
        if not layout.names:
            return ProbePass(layers=[{} for _ in targets])
        workers, resources = self.actors(device)
        start = time.perf_counter()
        batches = math.ceil(len(probe) / batch_size)
        shipped = [ray.put((probe, layout.transforms)), ray.put((list(targets), clip))]
        dataset = ray.data.range(batches, override_num_blocks=batches).map(
            _decode_batch, fn_kwargs={"refs": shipped[:1], "batch_size": batch_size}, num_cpus=1)
        dataset = dataset.map_batches(
            _BatchRecorder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"refs": shipped[1:], "pool_mode": pool_mode, "top_maps": top_maps,
                                   "n_images": len(probe), "device": device.type},
            **resources)
        stage = f"probe images → {' + '.join(layout.names)} (Ray, {workers} actors)"
        whole, done = layout.empty(), 0
        report(progress, stage, 0, len(probe))
        for row in dataset.iter_rows():
            part: PassPart = pickle.loads(row["payload"])
            whole.merge(part, top_maps)
            done += part.images_decoded
            report(progress, stage, done, len(probe))
        return whole.finish(targets, probe, time.perf_counter() - start)

    def score_layers(self, inputs, stored, log) -> None:
        """Each layer's similarity and quality stages that the cache lacks, as Ray tasks
        (one per model and layer), their results stored in the cache."""
        ray = self.ray
        cache = inputs.cache
        jobs: list[tuple[Any, bool]] = []
        for number, target in enumerate(inputs.targets):
            for layer in target.layers:
                scoring = layer_scoring(inputs, stored, number, layer)
                best = scoring.cached_best(cache)
                need_quality = scoring.cached_quality(cache) is None
                if best is None or need_quality:
                    jobs.append((scoring, best, need_quality))
        if not jobs:
            return
        shared_images = stored.image_features.features
        images_ref, texts_ref = ray.put(shared_images), ray.put(stored.text_features.features)
        resources = {"num_gpus": 1} if inputs.device.type == "cuda" else {"num_cpus": 1}
        task = ray.remote(**resources)(_score_layer)
        pending = {}
        for scoring, best, need_quality in jobs:
            sent = dataclasses.replace(scoring, text_features=None,
                                       image_features=None if scoring.image_features is shared_images
                                       else scoring.image_features)
            pending[task.remote(sent, best, need_quality, images_ref, texts_ref)] = (scoring, best)
        stage = f"similarity and quality (Ray, {len(jobs)} layers)"
        report(log.progress, stage, 0, len(jobs))
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            scoring, cached = pending.pop(ready[0])
            best, quality = pickle.loads(ray.get(ready[0]))
            if cached is None:
                cache.save(best, scoring.similarity_key, scoring.similarity_parts)
            if quality is not None:
                cache.save(quality, scoring.quality_key, scoring.quality_parts)
            done += 1
            report(log.progress, stage, done, len(jobs))
