"""A local web page for the folder tool: `python -m ue_jax.protect --serve`.

The page (web/page.html) asks for the folders, the budget and whether to
search the robust noise (configs/protect.py:robust=true), then runs
`protect_folder.run` in one background thread, the call the command line
makes: a bad input is the same one line, raised before anything is written,
and a second start of the same folders resumes from the workdir. Progress
is read from the files the run writes in its workdir; the finished page
shows a few files as original | amplified noise | copy. The server binds
127.0.0.1 only, answers only requests addressed to that host (or
localhost) and serves images only from the job's two folders.
"""

import http.server
import inspect
import io
import json
import os
import threading
import time
import urllib.parse
import webbrowser

import numpy as np
from absl import logging
from PIL import Image

from ue_jax import protect_folder
from ue_jax.io import image_folder as folder_lib
from ue_jax.runtime.errors import UEError
from ue_jax.search import generate

HOST = "127.0.0.1"
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web",
                    "page.html")
BUDGETS = (8, 16)  # the page's choices of eps, in 1/255
THUMB = 256        # a larger image is shown shrunk to this side
SAMPLES = 4        # files in the side-by-side


class Busy(UEError):
  """A start while a job runs."""


def error_line(message) -> str:
  """The line the command line prints for `message` (cli.exit_with_error)."""
  return f"error: {' '.join(str(message).split())}"


def _parse(text: str):
  try:
    return json.loads(text)
  except ValueError:
    return None


def _load(path: str, default=None, *, lines: bool = False):
  """A JSON file, or the records of a JSON-lines file (lines torn by a
  killed or running job skipped); `default` if there is none."""
  try:
    with open(path, encoding="utf-8") as f:
      if lines:
        return [r for r in map(_parse, f) if isinstance(r, dict)]
      return json.load(f)
  except (OSError, ValueError):
    return default


def count_images(folder: str, *, deep: bool = True) -> int:
  """Image files below `folder` (hidden ones skipped), or directly in it."""
  n = 0
  for _, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")] if deep else []
    n += sum(folder_lib.is_image_name(f) for f in files
             if not f.startswith("."))
  return n


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


class Job:
  """One run of protect_folder.run in a thread, and its progress on disk."""

  def __init__(self, cfg, input_dir: str, output_dir: str, *,
               reference: str = "", afresh: bool = False):
    self.cfg, self.afresh = cfg, afresh
    self.input, self.output = input_dir, output_dir
    self.workdir = protect_folder.default_workdir(output_dir)
    self.kwargs = {"overwrite": afresh}
    if reference and "reference" in inspect.signature(
        protect_folder.run).parameters:
      self.kwargs["reference"] = reference
    self.error, self.results = "", None
    self.writing_since = None  # (time, copies) when writing was first seen
    self.started, self.finished = time.time(), None
    self.listed = count_images(input_dir) if os.path.isdir(input_dir) else 0
    self.thread = threading.Thread(target=self._run, daemon=True,
                                   name="ue_jax.serve job")

  def _run(self):
    try:
      self.results = protect_folder.run(self.cfg, self.input, self.output,
                                        **self.kwargs)
    except UEError as e:
      self.error = error_line(e)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("the protect job failed")
      self.error = error_line(f"{type(e).__name__}: {e}")
    finally:
      self.finished = time.time()

  def _fresh(self, name: str) -> bool:
    """Whether this job wrote `name` (2 s of slack for coarse mtimes)."""
    path = os.path.join(self.workdir, name)
    return os.path.exists(path) and os.path.getmtime(path) >= self.started - 2

  def rounds(self) -> list:
    """The search's rounds in metrics.jsonl (an earlier run's too when this
    one resumes it; with `afresh` only this run's)."""
    return [{"round": r["round"], "train_accuracy": r.get("train_accuracy"),
             "seconds": r.get("seconds")}
            for r in _load(os.path.join(self.workdir, "metrics.jsonl"), [],
                           lines=True)
            if r.get("stage") == "generate" and "round" in r
            and not (self.afresh and r.get("time", 0) < self.started)]

  def status(self) -> dict:
    g = self.cfg.generate
    out = {"input": os.path.abspath(self.input),
           "output": os.path.abspath(self.output),
           "max_rounds": g.max_rounds,
           "stop_words": generate.stop_rule(self.cfg)[1],
           "elapsed": (self.finished or time.time()) - self.started,
           "rounds": self.rounds(), "total": self.listed, "eta_seconds": None}
    folder = _load(os.path.join(self.workdir, protect_folder.FOLDER))
    if self._fresh(protect_folder.FOLDER) and folder:
      out["total"] = len(folder["files"])
    out["written"] = len({r.get("input") for r in _load(os.path.join(
        self.workdir, protect_folder.WRITTEN), [], lines=True)})
    if self.thread.is_alive():
      out["state"] = "running"
      out.update(self._phase(out))
    elif self.error:
      out.update(state="error", message=self.error)
    else:
      results = _load(os.path.join(self.workdir, "results.json"), {})
      out.update(state="done", phase="done", samples=self.samples(),
                 results={k: v for k, v in results.items() if k != "config"})
      if "protected" in results:
        out["account"] = protect_folder.summary_lines(results)
      if self.results and self.results.get("failed"):
        out["message"] = error_line(protect_folder.failures_line(
            self.results["failed"], self.results["protected"]))
    return out

  def _phase(self, out: dict) -> dict:
    now, rounds = time.time(), out["rounds"]
    if not self._fresh(protect_folder.FOLDER):
      return {"phase": "reading"}
    if not os.path.exists(os.path.join(self.workdir, "noise.npy")):
      done = max((r["round"] for r in rounds), default=0)
      if rounds and (done >= out["max_rounds"] or generate.stop_rule(
          self.cfg)[0](rounds[-1]["train_accuracy"], rounds[-1]["round"])):
        return {"phase": "finishing", "round": done}  # saving the noise
      mine = [r["seconds"] for r in rounds if r["seconds"]]
      eta = (float(np.mean(mine)) * (out["max_rounds"] - done)
             if mine else None)
      return {"phase": "search", "round": min(done + 1, out["max_rounds"]),
              "eta_seconds": eta}
    n = out["written"]
    if self.writing_since is None:
      self.writing_since = (now, n)
    t, n0 = self.writing_since
    eta = ((now - t) / (n - n0) * (out["total"] - n)
           if n > n0 and now > t else None)
    return {"phase": "writing", "eta_seconds": eta}

  def manifest_files(self) -> dict:
    manifest = _load(os.path.join(self.workdir, protect_folder.MANIFEST), {})
    return {r["input"]: r for r in manifest.get("files", [])}

  def samples(self) -> list:
    """A few copies for the side-by-side: one per class first."""
    files = sorted(self.manifest_files().values(), key=lambda r: r["input"])
    first = {}
    for r in files:
      first.setdefault(r["label"], r)
    picked = list(first.values()) + [r for r in files
                                     if r not in first.values()]
    return [{"file": r["input"], "output": r["output"], "label": r["label"],
             "max_abs_delta": r["max_abs_delta"]} for r in picked[:SAMPLES]]

  def image(self, kind: str, rel: str) -> bytes:
    """PNG bytes of one file of the job: the original, the copy, or their
    |difference| scaled to the full range. Raises PermissionError for a
    path outside the job's folders, LookupError for one it did not write."""
    original = os.path.join(self.input, rel)
    if not _inside(original, self.input):
      raise PermissionError(rel)
    record = self.manifest_files().get(rel)
    if record is None or kind not in ("original", "noise", "protected"):
      raise LookupError(rel)
    copy = os.path.join(self.output, record["output"])
    if not _inside(copy, self.output):
      raise PermissionError(record["output"])
    before, after = (folder_lib.read(p).color.astype(np.int16)
                     for p in (original, copy))
    delta = np.abs(after - before)
    pixels = {"original": before, "protected": after}.get(
        kind, delta * 255 // max(int(delta.max()), 1)).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1
                            else pixels)
    if max(image.size) > THUMB:
      image.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def robust_recipe():
  """configs/protect.py's `make_robust` (the robust=true variant's changes),
  or None where the configs package is not importable."""
  try:
    from configs import protect as protect_config  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return getattr(protect_config, "make_robust", None)


def robust_choice(cfg) -> str:
  """The page's robust box: "on" when the server's config already searches
  class-wise noise (e.g. --config=configs/protect.py:robust=true), "off"
  when the page may switch it on, "" when it cannot."""
  if cfg.noise.layout == "classwise":
    return "on"
  return "off" if robust_recipe() else ""


class Server(http.server.ThreadingHTTPServer):
  """The page's server: the base config and at most one job."""

  daemon_threads = True

  def __init__(self, cfg, port: int):
    super().__init__((HOST, port), Handler)
    self.cfg, self.job, self.lock = cfg, None, threading.Lock()

  @property
  def url(self) -> str:
    return f"http://{HOST}:{self.server_address[1]}/"

  def defaults(self) -> dict:
    eps = round(self.cfg.noise.eps * 255)
    return {"budgets": sorted({*BUDGETS, eps}), "budget": eps,
            "cwd": os.getcwd(), "reference": "reference" in
            inspect.signature(protect_folder.run).parameters,
            "robust": robust_choice(self.cfg),
            "expectations": list(protect_folder.EXPECTATIONS)}

  def start(self, form: dict) -> Job:
    """Starts a job for the page's form; raises UEError (one line)."""
    path = lambda key: os.path.expanduser(str(form.get(key) or "").strip())
    input_dir, output_dir, reference = path("input"), path("output"), path(
        "reference")
    if not input_dir:
      raise UEError("give the input folder (the images to protect)")
    output_dir = output_dir or input_dir.rstrip("/\\") + "_protected"
    budget = int(form.get("budget") or round(self.cfg.noise.eps * 255))
    if budget not in self.defaults()["budgets"]:
      raise UEError(f"budget {budget}/255 is not one of the page's choices")
    cfg = self.cfg.copy_and_resolve_references()
    cfg.noise.eps = budget / 255
    if form.get("robust") and robust_choice(cfg) == "off":
      cfg = robust_recipe()(cfg)
    with self.lock:
      if self.job is not None and self.job.thread.is_alive():
        raise Busy(f"a job is running (protecting {self.job.input} into "
                   f"{self.job.output}); wait for it to end")
      self.job = Job(cfg, input_dir, output_dir, reference=reference,
                     afresh=bool(form.get("afresh")))
      self.job.thread.start()
    return self.job


def browse(path: str) -> dict:
  """The subfolders of `path` (hidden ones skipped) with their image
  counts (files directly inside), for the page's folder browser."""
  path = os.path.abspath(os.path.expanduser(path or os.getcwd()))
  if not os.path.isdir(path):
    raise UEError(f"{path} is not a folder")
  with os.scandir(path) as entries:
    folders = [{"name": e.name, "path": e.path,
                "images": count_images(e.path, deep=False)}
               for e in sorted(entries, key=lambda e: e.name.lower())
               if not e.name.startswith(".") and e.is_dir()]
  return {"path": path, "parent": os.path.dirname(path),
          "images": count_images(path, deep=False), "folders": folders}


class Handler(http.server.BaseHTTPRequestHandler):
  """GET /, /api/defaults, /api/status, /api/browse?path=,
  /api/image?kind=&file=; POST /api/start (JSON)."""

  server: Server

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug("%s " + format, self.address_string(), *args)

  def _send(self, code: int, body: bytes, kind: str):
    self.send_response(code)
    self.send_header("Content-Type", kind)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    self.end_headers()
    self.wfile.write(body)

  def _json(self, code: int, data: dict):
    self._send(code, json.dumps(data).encode("utf-8"), "application/json")

  def _ours(self) -> bool:
    """Only requests addressed to this server by its own name."""
    port = self.server.server_address[1]
    if self.headers.get("Host") in (f"{HOST}:{port}", f"localhost:{port}"):
      return True
    self._json(403, {"error": "error: requests to this page must be "
                              f"addressed to {self.server.url}"})
    return False

  def do_GET(self):  # pylint: disable=invalid-name
    if not self._ours():
      return
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    job = self.server.job
    if url.path in ("/", "/index.html"):
      with open(PAGE, "rb") as f:
        self._send(200, f.read(), "text/html; charset=utf-8")
    elif url.path == "/api/defaults":
      self._json(200, self.server.defaults())
    elif url.path == "/api/status":
      self._json(200, job.status() if job else {"state": "idle"})
    elif url.path == "/api/browse":
      try:
        self._json(200, browse(query.get("path", "")))
      except (UEError, OSError) as e:
        self._json(404, {"error": error_line(e)})
    elif url.path == "/api/image" and job is not None:
      try:
        self._send(200, job.image(query.get("kind", ""),
                                  query.get("file", "")), "image/png")
      except PermissionError:
        self._json(403, {"error": "error: not a file of this job"})
      except (LookupError, folder_lib.BadFile, OSError):
        self._json(404, {"error": "error: no such file of this job"})
    else:
      self._json(404, {"error": f"error: no page {url.path}"})

  def do_POST(self):  # pylint: disable=invalid-name
    if not self._ours():
      return
    if (urllib.parse.urlsplit(self.path).path != "/api/start" or not
        self.headers.get("Content-Type", "").startswith("application/json")):
      self._json(404, {"error": "error: POST /api/start takes JSON"})
      return
    try:
      size = int(self.headers.get("Content-Length") or 0)
      form = json.loads(self.rfile.read(size) or b"{}")
      job = self.server.start(form if isinstance(form, dict) else {})
    except (UEError, ValueError) as e:
      self._json(409 if isinstance(e, Busy) else 400,
                 {"error": error_line(e)})
      return
    self._json(200, {"started": True, "input": job.input,
                     "output": job.output})


def make_server(cfg, *, host: str = HOST, port: int = 0) -> Server:
  """The page's server bound to 127.0.0.1:`port` (0: a free port), not yet
  serving. Any other host is refused: the page lists and reads folders."""
  if host != HOST:
    raise UEError(f"the protect page binds {HOST} only (got host {host}): "
                  "it lists and reads your folders, so it is never offered "
                  "to other machines")
  try:
    return Server(cfg, port)
  except OSError as e:
    raise UEError(f"cannot serve the protect page on {HOST}:{port}: "
                  f"{e.strerror or e}") from None


def serve(cfg, *, host: str = HOST, port: int = 0,
          open_browser: bool = True) -> None:
  """Serves the page until the process is stopped; prints its address."""
  httpd = make_server(cfg, host=host, port=port)
  print(f"serving the protect page at {httpd.url}", flush=True)
  if open_browser:
    webbrowser.open(httpd.url)
  try:
    httpd.serve_forever()
  finally:
    httpd.server_close()
