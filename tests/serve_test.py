"""The local protect page (ue_jax/serve.py, ue_jax/web/page.html): driven end
to end in headless chromium over the DevTools protocol (skipped without
chromium) on a folder of 2 classes x 3 colour images, with a tiny search;
the copies, bounds and manifest are checked on disk with pillow. Bad input
shows the command line's one line and writes nothing; the server binds
127.0.0.1 only and serves no file outside the job's folders.

UE_JAX_PAGE_SCREENSHOT=PATH saves the finished page there as a PNG
(docs/protect_page.png was made so).
"""

import configparser
import fnmatch
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import chex
import numpy as np
from absl.testing import absltest
from PIL import Image

from configs import protect as protect_config
from tests import helpers
from ue_jax import protect_folder
from ue_jax import serve
from ue_jax.runtime.errors import UEError

BUDGET = 8  # the page's other choice than the default 16/255
CLASSES = ("reds", "blues")
PER_CLASS = 3


def tiny_config():
  cfg = protect_config.get_config()
  cfg.model.name, cfg.model.width = "small_cnn_avg", 4
  cfg.noise.num_steps = 2
  cfg.generate.max_rounds, cfg.generate.train_steps = 2, 2
  cfg.generate.batch_size = cfg.generate.eval_batch_size = 16
  cfg.protect.size, cfg.protect.preview = 8, 2
  return cfg


def write_folder(root) -> dict:
  """2 classes x 3 smooth colour pictures (48x40, a disc on a gradient);
  returns {relative path: uint8 pixels [H, W, 3]}."""
  yy, xx = np.mgrid[0:40, 0:48] / 40.0
  written = {}
  for c, name in enumerate(CLASSES):
    for k in range(PER_CLASS):
      disc = ((xx - 0.4 - 0.2 * k) ** 2 + (yy - 0.5) ** 2) < 0.08
      base = [0.9 - 0.4 * yy, 0.3 + 0.3 * xx, 0.2 + 0.2 * k * yy]
      rgb = np.stack(base if c == 0 else base[::-1], -1)
      rgb[disc] = [0.95, 0.85, 0.2] if c == 0 else [0.2, 0.8, 0.6]
      pixels = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
      rel = f"{name}/{k:02d}.png"
      os.makedirs(os.path.join(root, name), exist_ok=True)
      Image.fromarray(pixels).save(os.path.join(root, rel))
      written[rel] = pixels
  return written


def get(url, *, host=None):
  """(status, body bytes) of a GET."""
  request = urllib.request.Request(url)
  if host:
    request.add_header("Host", host)
  try:
    with urllib.request.urlopen(request, timeout=30) as r:
      return r.status, r.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


def post(url, form):
  request = urllib.request.Request(
      url + "api/start", data=json.dumps(form).encode(), method="POST",
      headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=30) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def wait_status(url, timeout=120):
  deadline = time.time() + timeout
  while True:
    status = json.loads(get(url + "api/status")[1])
    if status["state"] in ("done", "error") or time.time() > deadline:
      return status
    time.sleep(0.2)


def sha(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def cli_line(input_dir, output_dir, cfg):
  """The command line's one line for a bad input (the UEError that
  protect_folder.run raises, as cli.exit_with_error prints it)."""
  try:
    protect_folder.run(cfg, input_dir, output_dir)
  except UEError as e:
    return f"error: {' '.join(str(e).split())}"
  raise AssertionError(f"{input_dir} -> {output_dir} was accepted")


def start_server(cfg):
  server = serve.make_server(cfg)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def stop_server(server):
  server.shutdown()
  server.server_close()


class ServeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_serve_")
    cls.src = os.path.join(cls.tmp, "photos")
    cls.written = write_folder(cls.src)
    cls.cfg = tiny_config()
    cls.server = start_server(cls.cfg)
    cls.url = cls.server.url
    cls.browser = None
    if shutil.which("chromium"):
      from tests import cdp  # pylint: disable=g-import-not-at-top
      cls.browser = cdp.Chromium()

  @classmethod
  def tearDownClass(cls):
    if cls.browser:
      cls.browser.quit()
    stop_server(cls.server)
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def need_browser(self):
    if self.browser is None:
      self.skipTest("chromium is not installed (apt-get install chromium)")
    return self.browser

  def page_start(self, input_dir, output_dir="", *, budget=None,
                 robust=False):
    """Fills the form on a fresh page and clicks Start."""
    b = self.need_browser()
    b.open(self.url)
    b.wait("document.body.dataset.ready === '1'")
    b.js(f"""(() => {{
      const i = document.getElementById('input');
      i.value = {json.dumps(input_dir)};
      i.dispatchEvent(new Event('input'));
      const o = {json.dumps(output_dir)};
      if (o) {{ const e = document.getElementById('output'); e.value = o;
                e.dispatchEvent(new Event('input')); }}
    }})()""")
    if budget:
      b.js(f"document.querySelector('input[name=budget][value=\"{budget}\"]')"
           ".click()")
    if robust:
      b.js("document.getElementById('robust').click()")
    b.js("document.getElementById('start').click()")
    return b

  def test_page_protects_a_folder_end_to_end(self):
    out = self.src + "_protected"
    # The input chosen with the folder browser, from the folder above it.
    b = self.need_browser()
    b.open(self.url)
    b.wait("document.body.dataset.ready === '1'")
    b.js(f"document.getElementById('input').value = {json.dumps(self.tmp)};"
         "document.querySelector('[data-browse=input]').click()")
    b.wait("document.querySelectorAll('#browse-list li').length > 0")
    b.js("[...document.querySelectorAll('#browse-list li')].find("
         "li => li.firstChild.textContent === 'photos').click()")
    b.wait("document.getElementById('browse-path').textContent.startsWith("
           f"{json.dumps(self.src + '  (0 images')})")
    b.js("document.getElementById('browse-use').click();"
         f"document.querySelector('input[name=budget][value=\"{BUDGET}\"]')"
         ".click(); document.getElementById('start').click()")
    self.assertEqual(b.js("document.getElementById('input').value"),
                     self.src)
    self.assertEqual(b.js("document.getElementById('output').value"), out)
    # A second start while the job runs (it compiles for seconds) is refused.
    b.wait("document.body.dataset.state === 'running'")
    code, reply = post(self.url, {"input": self.src, "output": out + "2"})
    self.assertEqual(code, 409)
    self.assertRegex(reply["error"], r"^error: a job is running \(protecting ")
    self.assertFalse(os.path.exists(out + "2"))
    b.wait("document.body.dataset.state === 'done' || "
           "document.body.dataset.state === 'error'", timeout=180)
    self.assertEqual(b.js("document.body.dataset.state"), "done",
                     b.js("document.getElementById('message').textContent"))
    # Every image has a copy within the chosen budget, and changed.
    for rel, pixels in self.written.items():
      with Image.open(os.path.join(out, rel)) as copy:
        self.assertEqual((copy.size, copy.mode), ((48, 40), "RGB"))
        delta = np.abs(np.asarray(copy).astype(int) - pixels)
      self.assertLessEqual(delta.max(), BUDGET, rel)
      self.assertGreater(delta.max(), 0, rel)
    with open(os.path.join(out, ".ue_jax", "manifest.json")) as f:
      manifest = json.load(f)
    self.assertEqual(sorted(r["input"] for r in manifest["files"]),
                     sorted(self.written))
    self.assertEqual(manifest["max_delta_u8"], BUDGET)
    self.assertAlmostEqual(manifest["epsilon"], BUDGET / 255, places=6)
    with open(os.path.join(out, ".ue_jax", "results.json")) as f:
      results = json.load(f)
    # The page shows what the files say.
    self.assertEqual(b.js("document.getElementById('phase').textContent"),
                     "done")
    self.assertEqual(b.js("document.getElementById('output-path')"
                          ".textContent"), out)
    rounds = [json.loads(line) for line in open(
        os.path.join(out, ".ue_jax", "metrics.jsonl"))
              if '"generate"' in line]
    self.assertLen(rounds, results["rounds"])
    self.assertEqual(b.js("document.querySelectorAll('#rounds tr').length"),
                     len(rounds) + 1)
    summary = b.js("Object.fromEntries([...document.querySelectorAll("
                   "'#summary tr')].map(r => [r.cells[0].textContent, "
                   "r.cells[1].textContent]))")
    self.assertEqual(summary["protected"], str(len(self.written)))
    self.assertEqual(summary["max abs delta"],
                     str(results["max_abs_delta"]))
    # The run's account and what to expect, as the command line prints
    # them: on the page before the start and at the end.
    account = b.js("[...document.querySelectorAll('#account li')].map("
                   "l => l.textContent)")
    self.assertEqual(account, protect_folder.summary_lines(results))
    expect = b.js("[...document.querySelectorAll('#expect li')].map("
                  "l => l.textContent)")
    self.assertEqual(expect, list(protect_folder.EXPECTATIONS))
    # The side-by-side: one original, noise and copy per class first,
    # every picture loaded, the noise amplified in colour.
    b.wait("[...document.querySelectorAll('#samples img')].every("
           "i => i.complete && i.naturalWidth > 0)")
    shown = b.js("[...document.querySelectorAll('#samples img')].map("
                 "i => [i.dataset.kind, i.naturalWidth, i.naturalHeight])")
    self.assertLen(shown, 3 * 4)
    self.assertEqual({tuple(s) for s in shown[:3]},
                     {("original", 48, 40), ("noise", 48, 40),
                      ("protected", 48, 40)})
    rel = sorted(self.written)[0]
    for kind, want in (("original", self.written[rel]),
                       ("protected", np.asarray(Image.open(
                           os.path.join(out, rel))))):
      code, body = get(f"{self.url}api/image?kind={kind}&file={rel}")
      self.assertEqual(code, 200)
      np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                    want)
    code, body = get(f"{self.url}api/image?kind=noise&file={rel}")
    noise = np.asarray(Image.open(io.BytesIO(body))).astype(int)
    delta = np.abs(np.asarray(Image.open(os.path.join(out, rel))).astype(int)
                   - self.written[rel])
    np.testing.assert_array_equal(noise, delta * 255 // delta.max())
    self.assertEqual(noise.max(), 255)
    self.assertGreater(np.abs(noise[..., 0] - noise[..., 2]).max(), 0)
    shot = os.environ.get("UE_JAX_PAGE_SCREENSHOT")
    if shot:
      # The temporary folder's name shown as a home folder's.
      b.js("document.querySelectorAll('input[type=text], #summary td, "
           f"#output-path').forEach(e => {{ const t = {json.dumps(self.tmp)};"
           "if (e.value) e.value = e.value.replace(t, '~');"
           "else e.textContent = e.textContent.replace(t, '~'); })")
      b.screenshot(shot)

    # A new server (the first one killed) resumes from the workdir: no
    # search, every copy checked and kept, nothing rewritten.
    before = {rel: sha(os.path.join(out, rel)) for rel in self.written}
    second = start_server(self.cfg)
    try:
      code, _ = post(second.url, {"input": self.src, "budget": BUDGET})
      self.assertEqual(code, 200)
      status = wait_status(second.url)
    finally:
      stop_server(second)
    self.assertEqual(status["state"], "done", status.get("message"))
    self.assertEqual(status["results"]["written"], 0)
    self.assertEqual(status["results"]["skipped_verified"], len(self.written))
    self.assertEqual({rel: sha(os.path.join(out, rel))
                      for rel in self.written}, before)
    self.assertLen(status["rounds"], len(rounds))

  def test_robust_box_gives_each_class_one_luma_pattern(self):
    """The robust box runs configs/protect.py:robust=true's search on the
    page's budget: every copy of a class carries the same change, the same
    in R, G and B (nothing clips on these pictures), at most the budget and
    reaching it (the noise is written at the bound)."""
    self.assertEqual(self.server.defaults()["robust"], "off")
    out = os.path.join(self.tmp, "robust_out")
    b = self.page_start(self.src, out, budget=BUDGET, robust=True)
    b.wait("document.body.dataset.state === 'done' || "
           "document.body.dataset.state === 'error'", timeout=300)
    self.assertEqual(b.js("document.body.dataset.state"), "done",
                     b.js("document.getElementById('message').textContent"))
    with open(os.path.join(out, ".ue_jax", "results.json")) as f:
      noise = json.load(f)["config"]["noise"]
    self.assertEqual((noise["layout"], noise["form"], noise["at_bound"],
                      round(noise["eps"] * 255, 6)),
                     ("classwise", "luma", True, BUDGET))
    for name in CLASSES:
      deltas = [np.asarray(Image.open(os.path.join(out, rel))).astype(int)
                - pixels for rel, pixels in sorted(self.written.items())
                if rel.startswith(name + "/")]
      self.assertLen(deltas, PER_CLASS)
      for delta in deltas[1:]:
        chex.assert_trees_all_equal(delta, deltas[0])
      chex.assert_trees_all_equal(deltas[0][..., 1], deltas[0][..., 0])
      chex.assert_trees_all_equal(deltas[0][..., 2], deltas[0][..., 0])
      self.assertEqual(np.abs(deltas[0]).max(), BUDGET, name)
    # A server whose config already searches class-wise shows the box
    # ticked and fixed.
    cfg = protect_config.make_robust(tiny_config())
    self.assertEqual(serve.robust_choice(cfg), "on")
    second = start_server(cfg)
    try:
      b.open(second.url)
      b.wait("document.body.dataset.ready === '1'")
      self.assertEqual(b.js("[document.getElementById('robust').checked, "
                            "document.getElementById('robust').disabled]"),
                       [True, True])
    finally:
      stop_server(second)

  def test_bad_input_shows_the_command_line_and_writes_nothing(self):
    missing = os.path.join(self.tmp, "no_such_folder")
    inside = os.path.join(self.src, "out")
    one = os.path.join(self.tmp, "one_class")  # one class, no reference
    shutil.copytree(os.path.join(self.src, CLASSES[0]),
                    os.path.join(one, CLASSES[0]))
    for input_dir, output_dir in ((missing, missing + "_protected"),
                                  (one, one + "_protected"),
                                  (self.src, inside)):
      want = cli_line(input_dir, output_dir, self.cfg)
      b = self.page_start(input_dir, output_dir)
      b.wait("document.body.dataset.state === 'error'", timeout=60)
      self.assertEqual(b.js("document.getElementById('message').textContent"),
                       want)
      self.assertTrue(b.js("getComputedStyle(document.getElementById("
                           "'message')).display !== 'none'"))
      self.assertFalse(os.path.exists(output_dir))
    self.assertRegex(want, r"^error: --output \S+ lies inside --input ")

  def test_progress_is_read_from_the_workdir(self):
    out = os.path.join(self.tmp, "progress_out")
    cfg = tiny_config()
    cfg.generate.max_rounds = 5
    job = serve.Job(cfg, self.src, out)
    hold = threading.Event()
    job.thread = threading.Thread(target=hold.wait, daemon=True)
    job.thread.start()  # stands for a run in progress
    try:
      work = job.workdir
      os.makedirs(work)
      status = job.status()
      self.assertEqual((status["state"], status["phase"], status["total"]),
                       ("running", "reading", len(self.written)))
      with open(os.path.join(work, "folder.json"), "w") as f:
        json.dump({"files": [[r, "0", 0] for r in sorted(self.written)[:5]]},
                  f)
      metrics = os.path.join(work, "metrics.jsonl")
      with open(metrics, "w") as f:
        f.write(json.dumps({"stage": "generate", "round": 1, "seconds": 3.0,
                            "train_accuracy": 0.5, "time": time.time()})
                + '\n{"stage": "generate", "ro')  # a torn last line
      status = job.status()
      self.assertEqual((status["phase"], status["round"], status["total"]),
                       ("search", 2, 5))
      self.assertEqual(status["rounds"], [{"round": 1, "seconds": 3.0,
                                           "train_accuracy": 0.5}])
      self.assertEqual(status["eta_seconds"], 12.0)  # 4 rounds left, 3 s
      for last, phase in ((0.6, "search"), (1.0, "finishing")):
        with open(metrics, "w") as f:  # 1.0 meets the stop rule (>= 0.99)
          for k, acc in ((1, 0.5), (2, last)):
            f.write(json.dumps({"stage": "generate", "round": k,
                                "seconds": 1, "train_accuracy": acc}) + "\n")
        status = job.status()
        self.assertEqual((status["phase"], status["round"]),
                         (phase, 3 if phase == "search" else 2))
      np.save(os.path.join(work, "noise.npy"), np.zeros(1))
      with open(os.path.join(work, "written.jsonl"), "w") as f:
        f.write('{"input": "a"}\n{"inp{"input": "b"}\n{"input": "a"}\n'
                '{"input": "c"}\n')  # a torn line, a copy written again
      status = job.status()
      self.assertEqual((status["phase"], status["written"], status["total"]),
                       ("writing", 2, 5))
    finally:
      hold.set()
    self.assertFalse(os.path.exists(os.path.join(work, "config.json")))

  def test_reference_is_passed_only_where_run_takes_it(self):
    job = serve.Job(self.cfg, self.src, "o", reference="ref")
    takes = "reference" in inspect.signature(protect_folder.run).parameters
    self.assertEqual(job.kwargs, {"overwrite": False, **(
        {"reference": "ref"} if takes else {})})
    self.assertEqual(serve.Job(self.cfg, self.src, "o").kwargs,
                     {"overwrite": False})
    with mock.patch.object(protect_folder, "run",
                           lambda cfg, i, o, *, overwrite=False: None):
      job = serve.Job(self.cfg, self.src, "o", reference="ref", afresh=True)
    self.assertEqual(job.kwargs, {"overwrite": True})

  def test_binds_loopback_only(self):
    self.assertEqual(self.server.socket.getsockname()[0], "127.0.0.1")
    self.assertRegex(self.url, r"^http://127\.0\.0\.1:\d+/$")
    for host in ("0.0.0.0", "localhost", "::", "192.168.1.2"):
      with self.assertRaisesRegex(UEError, "binds 127.0.0.1 only"):
        serve.make_server(self.cfg, host=host)
      with self.assertRaisesRegex(UEError, "binds 127.0.0.1 only"):
        serve.serve(self.cfg, host=host, open_browser=False)
    # A request addressed to another name (DNS rebinding) is refused.
    port = self.server.server_address[1]
    self.assertEqual(get(self.url, host=f"evil.example:{port}")[0], 403)
    code, body = get(self.url)
    self.assertEqual(code, 200)
    self.assertIn(b"<title>ue_jax: protect your images</title>", body)

  def test_images_only_from_the_jobs_folders(self):
    server = start_server(self.cfg)
    try:
      self.assertEqual(get(f"{server.url}api/image?kind=original&file=a.png"
                           )[0], 404)  # no job yet
      missing = os.path.join(self.tmp, "gone")
      post(server.url, {"input": missing})
      self.assertEqual(wait_status(server.url)["state"], "error")
      for path in ("/etc/passwd", "../../../../etc/passwd",
                   "reds/../../../etc/passwd"):
        code, _ = get(f"{server.url}api/image?kind=original&file={path}")
        self.assertEqual(code, 403, path)
      code, _ = get(f"{server.url}api/image?kind=original&file=reds/00.png")
      self.assertEqual(code, 404)  # inside, but no copy of this job
    finally:
      stop_server(server)

  def test_browse_lists_subfolders_and_image_counts(self):
    code, body = get(f"{self.url}api/browse?path={self.src}")
    self.assertEqual(code, 200)
    listing = json.loads(body)
    self.assertEqual(listing["path"], self.src)
    self.assertEqual(listing["parent"], self.tmp)
    self.assertEqual({f["name"]: f["images"] for f in listing["folders"]},
                     {c: PER_CLASS for c in CLASSES})
    self.assertEqual(get(f"{self.url}api/browse?path=/no/such")[0], 404)

  def test_the_command_line_serves_the_page(self):
    cwd = self.create_tempdir().full_path  # no configs/ here
    env = helpers.cli_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ue_jax.protect", "--serve", "--port=0",
         "--noopen_browser"], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
      # Meanwhile: without --serve, --input and --output are needed.
      bare = subprocess.run([sys.executable, "-m", "ue_jax.protect",
                             "--output=x"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120,
                            check=False)
      line = proc.stdout.readline().strip()
      found = re.fullmatch(r"serving the protect page at "
                           r"(http://127\.0\.0\.1:\d+/)", line)
      self.assertIsNotNone(found, line + proc.stderr.read()
                           if not line else line)
      code, body = get(found.group(1))
      self.assertEqual(code, 200)
      with open(serve.PAGE, "rb") as f:
        self.assertEqual(body, f.read())
    finally:
      proc.send_signal(signal.SIGINT)
      _, err = proc.communicate(timeout=60)
    self.assertEqual(proc.returncode, 130, err[-2000:])
    self.assertTrue(err.strip().splitlines()[-1].startswith(
        "stopped: SIGINT received (serving the protect page"), err[-2000:])
    self.assertEqual(bare.returncode, 2)
    self.assertEqual(bare.stderr.strip().splitlines()[-1],
                     "error: --input is required (or --serve, for the local "
                     "page)")
    self.assertEqual(os.listdir(cwd), [])

  def test_the_page_ships_as_package_data(self):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(helpers.REPO, "setup.cfg"))
    globs = parser["options.package_data"]["ue_jax"].split()
    page = os.path.relpath(serve.PAGE, os.path.join(helpers.REPO, "ue_jax"))
    self.assertTrue(any(fnmatch.fnmatch(page, g) for g in globs), globs)
    with open(serve.PAGE, encoding="utf-8") as f:
      html = f.read()
    # No asset is fetched from elsewhere at run time.
    self.assertEqual(re.findall(r"(?:src|href)=\"(?:https?:)?//", html), [])
    self.assertNotIn("@import", html)


if __name__ == "__main__":
  absltest.main()
