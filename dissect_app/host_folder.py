"""Hosted demo folders: results bundles and the browsing app, ready to push to a host.

``write_host_folder(out, sources)`` writes a self-contained folder that runs as a
Hugging Face Space (Docker template) or a Streamlit Community Cloud app::

    streamlit_app.py            the server script (a copy of dissect_app/server/streamlit_app.py)
    dissect_app/, dissect_core/ the app and the library, copied from the installed packages
                                (so this works from ``pip install``, not only from a checkout)
    requirements.txt            the hosted set (dissect_app/requirements-hosted.txt): no torch
    .streamlit/config.toml      headless, no usage statistics, no error details for visitors
    .streamlit/secrets.toml     DISSECT_HOSTED = "1": Streamlit makes root-level secrets
                                environment variables when the server starts, so hosted
                                mode is on with any host and any start command
    results/<bundle>/<run>/     the runs, unpacked from their bundles at build time
    Dockerfile                  port 8501, a health check on /_stcore/health, hosted mode on
    README.md                   the Space's front matter and the steps for both hosts

With no sources, ``results/`` stays empty and the app opens on its built-in demo
(``dissect_core.runs.demo_runs``, shipped inside ``dissect_core/``).

Everything a visitor sees is baked in when the folder is written: at serve time the
app reads its own ``results/`` folder and nothing from a visitor picks a path. The
folder is built beside ``out`` and renamed into place when complete, so a failure
leaves nothing half-written.
"""
from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import dissect_core
from dissect_core.common.errors import InvalidInputError
from dissect_core.common.files import staging_dir
from dissect_core.common.progress import ProgressFn

# What browsing needs: the app's package (its server script, pages and UI code) and the library.
APP_PACKAGE = Path(__file__).resolve().parent
PACKAGES = (APP_PACKAGE, Path(dissect_core.__file__).resolve().parent)
SERVER_SCRIPT = APP_PACKAGE / "server" / "streamlit_app.py"
APP_CONFIG = APP_PACKAGE / "server" / ".streamlit" / "config.toml"
HOSTED_REQUIREMENTS = APP_PACKAGE / "requirements-hosted.txt"
RESULTS_DIR = "results"
PORT = 8501
HOSTED_ENV = "DISSECT_HOSTED"
DEFAULT_TITLE = "CLIP-Dissect explorer"
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


@dataclass(frozen=True)
class HostFolder:
    """What ``write_host_folder`` wrote: the folder and the run folders under ``results/``."""

    path: Path
    runs: list[Path]


def write_host_folder(
    out_dir: Union[str, Path],
    sources: Sequence[Union[str, Path]],
    *,
    title: str = DEFAULT_TITLE,
    device: str = "cpu",
    progress: Optional[ProgressFn] = None,
) -> HostFolder:
    """Write the hosted app with ``sources`` baked in: bundles (.zip), run folders, result
    files and folders of result files (``run_folders.load_runs``); none: the built-in demo.

    Runs that are not bundles yet are bundled first (``bundle.export_bundle``: thumbnails and activation
    maps of each unit's top images, so the host needs neither probe images nor weights).
    ``out_dir`` must not exist yet, or be an empty folder.
    """
    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.runs.bundle_format import import_bundle
    from dissect_core.runs.run_folders import load_runs

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"{out} already exists and is not an empty folder: choose a new folder.")
    if not sources:
        from dissect_core.runs.demo_runs import demo_runs

        demo_runs()  # the built-in demo is what the folder will show: fail now if it is missing
    missing = [str(s) for s in sources if not Path(s).exists()]
    if missing:
        raise InvalidInputError(f"Not found: {', '.join(missing)}. Give bundles (.zip), run folders or result files.")
    bundles = [Path(s) for s in sources if Path(s).is_file() and Path(s).suffix.lower() == ".zip"]
    run_sources = [Path(s) for s in sources if Path(s) not in bundles]
    runs = load_runs(run_sources) if run_sources else []  # a bad run folder fails before anything is written

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}-")
    try:
        shutil.copy2(SERVER_SCRIPT, staging / SERVER_SCRIPT.name)
        for package in PACKAGES:
            shutil.copytree(package, staging / package.name, ignore=_SKIPPED)
        shutil.copy2(HOSTED_REQUIREMENTS, staging / "requirements.txt")
        results = staging / RESULTS_DIR
        results.mkdir()
        unpacked: list[Path] = []
        for path in bundles:
            with path.open("rb") as handle:
                unpacked += import_bundle(handle, results)
        if runs:
            data = export_bundle(runs, device=device, progress=progress)
            unpacked += import_bundle(_Named(data, "runs.zip"), results)
        (staging / ".streamlit").mkdir()
        (staging / ".streamlit" / "config.toml").write_text(streamlit_config(), encoding="utf-8")
        (staging / ".streamlit" / "secrets.toml").write_text(
            "# Not a secret: Streamlit exports root-level secrets as environment variables at startup,\n"
            "# which turns the app's hosted (read-only) mode on wherever this folder is served.\n"
            f'{HOSTED_ENV} = "1"\n', encoding="utf-8")
        (staging / "Dockerfile").write_text(dockerfile(), encoding="utf-8")
        (staging / ".dockerignore").write_text("__pycache__/\n*.pyc\n.git/\n", encoding="utf-8")
        (staging / "README.md").write_text(readme(title, demo=not sources), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return HostFolder(out, [out / path.relative_to(staging) for path in unpacked])


class _Named:
    """A bundle in memory with a file name (``import_bundle`` names the folder after it)."""

    def __init__(self, data: bytes, name: str):
        import io

        self._buffer = io.BytesIO(data)
        self.name = name

    def __getattr__(self, attr):
        return getattr(self._buffer, attr)


# Settings a public, read-only demo needs, over the app's own .streamlit/config.toml.
HOSTED_CONFIG = {
    "server": {"headless": True, "runOnSave": False, "fileWatcherType": "none"},
    "browser": {"gatherUsageStats": False},
    "client": {"showErrorDetails": "none", "toolbarMode": "viewer"},
}


def streamlit_config() -> str:
    """``.streamlit/config.toml`` for a public host: the app's own settings (theme, upload
    limit, toolbar) with no file watching, no usage statistics and no
    tracebacks (they would show the server's paths).

    Written by hand: the standard library reads TOML but does not write it, and these
    sections hold only strings, numbers and booleans.
    """
    config = tomllib.loads(APP_CONFIG.read_text(encoding="utf-8"))
    for section, values in HOSTED_CONFIG.items():
        config.setdefault(section, {}).update(values)
    lines = ["# Written by `python -m dissect_core host`: the app's settings, made fit for a public demo."]
    for section, values in config.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]  # JSON scalars are TOML
    return "\n".join(lines) + "\n"


def dockerfile() -> str:
    """The Space's image: the hosted requirements, the app, hosted mode on, port 8501."""
    return f"""# Written by `python -m dissect_core host`. Build and run: docker build -t demo . && docker run -p {PORT}:{PORT} demo
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    {HOSTED_ENV}=1 HOME=/home/user PATH=/home/user/.local/bin:$PATH

# Hugging Face Spaces run the container as user 1000.
RUN useradd --create-home --uid 1000 user
USER user
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
RUN pip install --user -r requirements.txt
COPY --chown=user . .

EXPOSE {PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \\
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:{PORT}/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "streamlit_app.py", "--server.port={PORT}", "--server.address=0.0.0.0"]
"""


def readme(title: str, demo: bool = False) -> str:
    """The folder's README: the Space's front matter, then how to publish on either host."""
    front = "\n".join([
        "---",
        f"title: {json.dumps(title[:60])}",  # a JSON string is a valid YAML scalar, quotes escaped
        "emoji: 🔬",
        "colorFrom: blue",
        "colorTo: gray",
        "sdk: docker",
        f"app_port: {PORT}",
        "pinned: false",
        "---",
    ])
    shown = ("the built-in demo (a small CNN trained on Fashion-MNIST against the same network "
             "untrained)" if demo else
             f"the runs in `{RESULTS_DIR}/` (unpacked from their results bundles when this folder was written)")
    return f"""{front}

# {title}

A read-only CLIP-Dissect explorer: {shown} compared on every page. Visitors can
browse and upload their own CSVs or bundles for their session; nothing they send is
kept. Written by `python -m dissect_core host`.

## Publish as a Hugging Face Space (Docker)

1. Create a Space at <https://huggingface.co/new-space> and choose **Docker** as the SDK
   (blank template). Free CPU hardware is enough.
2. Upload this folder's contents to it, e.g. with the Hugging Face CLI
   (`pip install huggingface_hub`, then `hf auth login`):

   ```bash
   hf upload YOUR_NAME/YOUR_SPACE . . --repo-type=space
   ```

   (With git instead: clone the Space, copy this folder's files in, `git lfs track "*.npy" "*.jpg"`,
   commit and push: the Hub refuses binary files outside Git LFS/Xet.)
3. The Space builds the `Dockerfile` (port {PORT}, health check on `/_stcore/health`,
   `{HOSTED_ENV}=1`) and opens the app. The front matter above (`sdk: docker`,
   `app_port: {PORT}`) is what the Space reads.

## Publish on Streamlit Community Cloud

1. Push this folder's contents to a GitHub repository (the folder is the repository's root),
   including `.streamlit/secrets.toml`: it holds no secret, only `{HOSTED_ENV} = "1"`, which
   Streamlit exports as an environment variable at startup and which keeps the app read-only
   (check that no `.gitignore` leaves it out).
2. At <https://share.streamlit.io> choose **Create app**, pick the repository and branch,
   and set the main file path to `streamlit_app.py`. Under *Advanced settings* choose
   Python 3.11.
3. Deploy: Community Cloud installs `requirements.txt` (the browsing set, no torch) and
   serves the app.

## Run it locally

```bash
docker build -t dissect-demo . && docker run -p {PORT}:{PORT} dissect-demo
# or, without Docker:
python3.11 -m venv .venv && .venv/bin/pip install -r requirements.txt
{HOSTED_ENV}=1 .venv/bin/streamlit run streamlit_app.py --server.port={PORT}
```

Then open <http://localhost:{PORT}>.
"""
