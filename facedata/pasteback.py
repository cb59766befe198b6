"""Paste an anonymised crop back into its original photo, at the photo's own resolution.

    paste_back(photo, anonymised_crop, face_mask, transform)      # changes `photo` in place

Every method returns a crop in the canonical frame (`facedata.framing`); the stored CropTransform
says where that frame lies in the photo. Each photo pixel near the face is mapped into the crop
(the inverse similarity, bilinear) and blended with the face mask as weight, so only the face's
box of the photo is read or written: a 5000-px photo costs what a small one does.

The weight is the mask feathered inwards: 0 outside the mask, rising to 1 over `feather` crop
pixels inside its edge. So no pixel outside the mask changes beyond the interpolation's reach (one
crop pixel; one photo pixel where the face is smaller than the crop): the hair, the background and
a neighbour's face stay bit for bit, and the seam is hidden inside the face. Where the face is
smaller than the crop, the crop is first area-averaged down to the photo's resolution, so no
detail is skipped (aliased) between photo pixels. `feather=0` is a hard
edge: the mask as it is. Parts of a crop that edge padding invented (a face near the photo's
border) have no pixel to land on and are dropped.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facedata.framing import CropTransform

#: Default width of the blend at the mask's edge, in crop pixels (the 220x180 crop's face is ~110 px wide).
FEATHER = 6.0


def blend_weight(mask: np.ndarray, feather: float = FEATHER) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 0 outside the mask, 1 from `feather` crop pixels inside its edge (0: the mask)."""
    if feather < 0:
        raise ValueError(f"feather must be >= 0 crop pixels, got {feather}")
    inside = mask.astype(np.uint8)
    if feather == 0:
        return inside.astype(np.float32)
    # Distance of each mask pixel to the nearest pixel outside it: 1 on the edge's inner row.
    distance = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.clip(distance / feather, 0.0, 1.0).astype(np.float32)


def paste_back(photo: np.ndarray, crop: np.ndarray, mask: np.ndarray, transform: CropTransform,
               feather: float = FEATHER) -> None:
    """Blend `crop` ((H, W, 3) uint8, canonical frame) into `photo` ((h, w, 3) uint8) inside `mask`, in place.

    `transform` maps the photo's coordinates to the crop's (the one the crop was cut with, for a
    photo of this resolution); `mask` is the crop-frame face mask; `feather` is in crop pixels.
    """
    weight = blend_weight(mask, feather)
    rows, cols = np.nonzero(weight)
    if rows.size == 0:
        return
    # The weight's support in photo pixels, a pixel wider for the interpolation's taps, clipped to the photo.
    support = transform.to_image(np.array([[cols.min(), rows.min()], [cols.max(), rows.max()]]))
    reach = 1 + 1 / transform.scale
    left, top = (max(0, math.floor(v - reach)) for v in support[0])
    right, bottom = (min(side, math.ceil(v + reach) + 1) for v, side in zip(support[1], photo.shape[1::-1],
                                                                              strict=True))
    if left >= right or top >= bottom:
        return
    # In float, so the only rounding is the blend's.
    face, weight, (scale_x, scale_y) = _at_most_photo_resolution(crop.astype(np.float32), weight, transform.scale)
    # Photo pixel (left + j, top + i) -> (shrunk) crop pixel-centre coordinates, as CropTransform.to_crop maps them.
    inverse = np.array([[scale_x, 0.0, scale_x * (left + 0.5 - transform.x0) - 0.5],
                        [0.0, scale_y, scale_y * (top + 0.5 - transform.y0) - 0.5]])
    size = (right - left, bottom - top)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(face, inverse, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(weight, inverse, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    region = photo[top:bottom, left:right]
    touched = alpha > 0
    a = alpha[touched][:, None]
    region[touched] = np.rint(face[touched] * a + region[touched] * (1.0 - a)).astype(np.uint8)


def _at_most_photo_resolution(crop: np.ndarray, weight: np.ndarray, scale: float
                              ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The crop and weight area-averaged down to the photo's resolution where the crop is finer (a small face).

    Bilinear sampling alone would skip crop pixels between photo pixels (aliasing); returns the crop
    pixels per photo pixel along x and y after shrinking (1 if shrunk, up to rounding; else `scale`).
    """
    if scale <= 1:
        return crop, weight, (scale, scale)
    height, width = weight.shape
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    shrunk = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (crop, weight)]
    return *shrunk, (scale * size[0] / width, scale * size[1] / height)
