"""One definition of image preprocessing, used by the training pipeline and the serving graph.

Training maps it over uint8 images (``recipe.image_preprocessor``, ``recipe.scale_images``);
the ``serving_bytes`` signature applies it to decoded image bytes. Neither can drift from the
other, because both call ``prepare_images``.
"""

from __future__ import annotations

import tensorflow as tf

PIXEL_SCALE = 1.0 / 255.0  # uint8 pixels to [0, 1]


def prepare_images(images, *, size=None, channels=None, scale: float = PIXEL_SCALE, offset: float = 0.0):
    """Pixels ``(..., h, w, c)`` in ``[0, 255]`` to float32 model inputs.

    Resizes (bilinear) when ``size`` differs, converts grey to RGB or RGB to grey when
    ``channels`` differs, then computes ``pixels * scale + offset``.

    Args:
        images: uint8 or float tensor ``(h, w, c)`` or ``(batch, h, w, c)``.
        size: ``(height, width)`` of the model input; None keeps the images' size.
        channels: 1 or 3, the model input's channels; None keeps the images' channels.
        scale: float, multiplies the pixels. Default ``1/255``.
        offset: float, added after scaling (e.g. ``-1.0`` with ``scale=2/255``). Default 0.

    Returns:
        A float32 tensor ``(..., height, width, channels)``.

    Example:
        >>> prepare_images(uint8_batch, size=(32, 32), channels=3)  # Fashion-MNIST for an RGB backbone
    """
    images = tf.convert_to_tensor(images)
    if size is not None and tuple(images.shape[-3:-1]) != tuple(size):
        # Resize first, from the pixels' own dtype: a large decoded image is never cast to
        # float32 at its full size (4x its uint8 bytes). Bilinear resizing computes in float32.
        images = tf.image.resize(images, size)
    images = tf.cast(images, tf.float32)
    if channels is not None and images.shape[-1] != channels:
        convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
        images = convert(images)  # linear in the pixels, so it commutes with the resize
    return images * scale + offset
