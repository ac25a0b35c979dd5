"""Headless chromium driven over the Chrome DevTools Protocol, with a small
standard-library websocket client (RFC 6455: masked text frames out, text
or continued frames in, pings answered), for tests of the local page."""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request


class WebSocket:
  """A client websocket to ws://HOST:PORT/PATH (no TLS, no extensions)."""

  def __init__(self, url: str, timeout: float = 60):
    parts = urllib.parse.urlsplit(url)
    self.sock = socket.create_connection((parts.hostname, parts.port),
                                         timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    self.sock.sendall(
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode())
    head = b""
    while b"\r\n\r\n" not in head:
      chunk = self.sock.recv(1)
      if not chunk:
        raise ConnectionError("the websocket handshake was cut")
      head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
      raise ConnectionError(head.decode(errors="replace"))

  def _exact(self, n: int) -> bytes:
    out = b""
    while len(out) < n:
      chunk = self.sock.recv(n - len(out))
      if not chunk:
        raise ConnectionError("the websocket closed")
      out += chunk
    return out

  def _frame(self, opcode: int, payload: bytes):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
      head += bytes([0x80 | n])
    elif n < 1 << 16:
      head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
      head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
            ).to_bytes(n, "big") if n else b""
    self.sock.sendall(head + mask + body)

  def send(self, text: str):
    self._frame(0x1, text.encode("utf-8"))

  def recv(self) -> str:
    message = b""
    while True:
      b0, b1 = self._exact(2)
      n = b1 & 0x7F
      if n == 126:
        n = int.from_bytes(self._exact(2), "big")
      elif n == 127:
        n = int.from_bytes(self._exact(8), "big")
      payload = self._exact(n)  # a server's frames are not masked
      opcode = b0 & 0x0F
      if opcode == 0x9:  # ping
        self._frame(0xA, payload)
        continue
      if opcode == 0x8:
        raise ConnectionError("the websocket closed")
      message += payload
      if b0 & 0x80:
        return message.decode("utf-8")

  def close(self):
    self.sock.close()


class Chromium:
  """A headless chromium and its first page, driven with `call`."""

  def __init__(self, width: int = 1100, height: int = 900):
    self.binary = shutil.which("chromium")
    self.profile = tempfile.mkdtemp(prefix="ue_jax_chromium_")
    argv = [self.binary, "--headless=new", "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}", "--no-first-run",
            "--no-default-browser-check", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            f"--window-size={width},{height}", "about:blank"]
    if os.geteuid() == 0:  # chromium refuses its sandbox to root
      argv.insert(1, "--no-sandbox")
    self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    port_file = os.path.join(self.profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while not os.path.exists(port_file) or not open(port_file).read():
      if time.time() > deadline or self.proc.poll() is not None:
        self.quit()
        raise RuntimeError("chromium did not start its DevTools port")
      time.sleep(0.1)
    port = open(port_file).read().split()[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
      pages = [t for t in json.load(r) if t["type"] == "page"]
    self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
    self.next_id = 0

  def call(self, method: str, **params) -> dict:
    self.next_id += 1
    self.ws.send(json.dumps({"id": self.next_id, "method": method,
                             "params": params}))
    while True:
      reply = json.loads(self.ws.recv())
      if reply.get("id") == self.next_id:
        if "error" in reply:
          raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

  def js(self, expression: str):
    """The value of a JavaScript expression in the page (awaited)."""
    result = self.call("Runtime.evaluate", expression=expression,
                       returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in result:
      raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
    return result["result"].get("value")

  def wait(self, expression: str, timeout: float = 60):
    """Polls `expression` until it is truthy; returns its value."""
    deadline = time.time() + timeout
    while True:
      value = self.js(expression)
      if value:
        return value
      if time.time() > deadline:
        raise TimeoutError(f"{expression} stayed {value!r} for {timeout} s")
      time.sleep(0.1)

  def open(self, url: str):
    self.call("Page.enable")
    self.call("Page.navigate", url=url)
    self.wait(f"location.href === {json.dumps(url)} && "
              "document.readyState === 'complete'")

  def screenshot(self, path: str, width: int = 1100):
    """The whole page (the viewport grown to its height) as a PNG file."""
    height = self.js("document.documentElement.scrollHeight")
    self.call("Emulation.setDeviceMetricsOverride", width=width,
              height=height, deviceScaleFactor=1, mobile=False)
    data = self.call("Page.captureScreenshot", format="png")["data"]
    with open(path, "wb") as f:
      f.write(base64.b64decode(data))

  def quit(self):
    if getattr(self, "ws", None):
      self.ws.close()
    self.proc.terminate()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
    shutil.rmtree(self.profile, ignore_errors=True)
