"""ImageNet normalisation, applied on device inside the jitted step."""

import jax.numpy as jnp

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def normalize(video: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """uint8 RGB video (..., 3) -> (video - mean) / std in `dtype`, same shape."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return ((video.astype(jnp.float32) - mean) / std).astype(dtype)
