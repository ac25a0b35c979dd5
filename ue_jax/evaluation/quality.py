"""How visible a release is: PSNR, SSIM and mean |change| of each released
image against its original (uint8 arrays [N, H, W, C]).

SSIM is Wang et al.'s index with uniform 7x7 windows per channel
(population statistics), averaged over the windows that fit inside the
image and over the channels; the constants are (0.01 * 255)^2 and
(0.03 * 255)^2.
"""

from typing import Dict, Optional

import numpy as np
from scipy import ndimage

WINDOW = 7
PSNR_CAP = 100.0  # dB, an unchanged image


def psnr(original: np.ndarray, released: np.ndarray) -> np.ndarray:
  """Per image, in dB (PSNR_CAP for an unchanged one)."""
  diff = original.astype(np.float64) - released.astype(np.float64)
  mse = (diff ** 2).reshape(len(diff), -1).mean(1)
  out = np.full(len(mse), PSNR_CAP)
  moved = mse > 0
  out[moved] = np.minimum(PSNR_CAP, 10 * np.log10(255.0 ** 2 / mse[moved]))
  return out


def ssim(original: np.ndarray, released: np.ndarray) -> np.ndarray:
  """Per image: the mean SSIM over its full 7x7 windows and channels."""
  x = original.astype(np.float64)
  y = released.astype(np.float64)
  size = (1, WINDOW, WINDOW, 1)
  mean = lambda a: ndimage.uniform_filter(a, size=size, mode="reflect")
  mx, my = mean(x), mean(y)
  vx, vy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2
  cxy = mean(x * y) - mx * my
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  index = ((2 * mx * my + c1) * (2 * cxy + c2)
           / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
  h = WINDOW // 2
  inner = index[:, h:index.shape[1] - h, h:index.shape[2] - h, :]
  return inner.reshape(len(inner), -1).mean(1)


def summary(original: np.ndarray, released: np.ndarray,
            rows: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Means over the images `rows` (a bool mask; None: all) of PSNR, SSIM
  and mean |change| (in 1/255)."""
  if rows is not None:
    original, released = original[rows], released[rows]
  change = np.abs(original.astype(np.int16) - released.astype(np.int16))
  return {"images": int(len(original)),
          "psnr_db": float(psnr(original, released).mean()),
          "ssim": float(ssim(original, released).mean()),
          "mean_abs_change_255": float(change.mean())}
