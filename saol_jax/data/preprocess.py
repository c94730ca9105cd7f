"""tf.data image preprocessing: uint8 in, uint8 out, randomness from an explicit seed.

Every random choice uses a `tf.random.stateless_*` op (or a stateless
`tf.image` op) keyed by a `[2]`-shaped int seed tensor, so an example's
augmentation depends only on the seed it is given, never on how many
examples came before it. Normalisation is left to the device.
"""

from __future__ import annotations

from etils import epy

with epy.lazy_imports():  # TensorFlow only where tf.data runs
    import tensorflow as tf

# ImageNet RGB PCA (fb.resnet.torch, used by the CutMix reference), on a [0, 1] scale.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Rounds a float image on the [0, 255] scale to uint8, clipping first."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def resize(image: tf.Tensor, size: tuple[int, int] | int) -> tf.Tensor:
    """Bilinear (antialiased) resize to `size` = (height, width) or a square side."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    out = tf.image.resize(image, hw, method="bilinear", antialias=True)
    return to_uint8(out)


def cifar_train(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad 4 pixels, random crop back to the input size, random horizontal flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    flipped = tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)
    return tf.ensure_shape(flipped, image.shape)


def inception_train(image: tf.Tensor, seed: tf.Tensor, size: int, color_jitter: float = 0.0,
                    lighting: float = 0.0) -> tf.Tensor:
    """Random-resized-crop to `size` (area 0.08-1, ratio 3/4-4/3), flip, optional jitter and lighting.

    `color_jitter` is the brightness/contrast/saturation strength (0.4 in the
    ImageNet recipe), `lighting` the std of the PCA lighting noise (0.1); 0
    disables either.
    """
    crop_seed, *rest = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    begin, crop_size = _random_crop_window(tf.shape(image), crop_seed)
    crop = tf.slice(image, begin, crop_size)
    return _resize_flip_jitter(crop, image.shape[-1], rest, size, color_jitter, lighting)


def inception_train_jpeg(encoded: tf.Tensor, seed: tf.Tensor, size: int, color_jitter: float = 0.0,
                         lighting: float = 0.0, channels: int = 3) -> tf.Tensor:
    """`inception_train` on a JPEG string, decoding only the crop window.

    The window is drawn from the JPEG header's size with the same seeds as
    `inception_train(decode_jpeg(encoded), ...)` uses, and
    `tf.image.decode_and_crop_jpeg` skips the pixel reconstruction outside
    it (see benchmarks/README.md for what that saves). The two outputs
    differ only where chroma upsampling meets the window's edge (well under
    1% of the pixels, by a few levels).
    """
    crop_seed, *rest = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    begin, crop_size = _random_crop_window(tf.image.extract_jpeg_shape(encoded), crop_seed)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    crop = tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)
    return _resize_flip_jitter(crop, channels, rest, size, color_jitter, lighting)


def _random_crop_window(image_shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(begin, size) [3] of a random-resized-crop window: area 0.08-1, aspect ratio 3/4-4/3."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, crop_size


def _resize_flip_jitter(crop: tf.Tensor, channels: int, seeds: list[tf.Tensor], size: int,
                        color_jitter: float, lighting: float) -> tf.Tensor:
    """The steps of `inception_train` after the crop; `seeds` = (flip, jitter, lighting)."""
    flip_seed, jitter_seed, light_seed = seeds
    out = tf.image.resize(crop, (size, size), method="bilinear", antialias=True) / 255.0
    out = tf.ensure_shape(out, (size, size, channels))
    out = tf.image.stateless_random_flip_left_right(out, seed=flip_seed)
    if color_jitter > 0:
        out = _color_jitter(out, color_jitter, jitter_seed)
    if lighting > 0:
        out = _pca_lighting(out, lighting, light_seed)
    return to_uint8(out * 255.0)


def resize_center_crop(image: tf.Tensor, size: int, crop_fraction: float = 0.875) -> tf.Tensor:
    """Resizes the shorter side to round(size / crop_fraction), then takes the central size x size crop."""
    shorter = round(size / crop_fraction)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = shorter / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), shorter)
    resized = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
    top, left = tf.unstack((new_hw - size) // 2)
    crop = resized[top:top + size, left:left + size]
    return tf.ensure_shape(to_uint8(crop), (size, size, image.shape[-1]))


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """Luma of an RGB image (the image itself if it has one channel), keeping a channel axis."""
    if image.shape[-1] == 1:
        return image
    return tf.reduce_sum(image * tf.constant(_GRAY_WEIGHTS), axis=-1, keepdims=True)


def _blend(image: tf.Tensor, target: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """factor * image + (1 - factor) * target: factor 1 keeps the image."""
    return factor * image + (1.0 - factor) * target


def _color_jitter(image: tf.Tensor, strength: float, seed: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and saturation in a random order, each with a factor in 1 +- strength."""
    factor_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    factors = tf.random.stateless_uniform(
        [3], factor_seed, minval=max(0.0, 1.0 - strength), maxval=1.0 + strength)
    order = tf.random.experimental.stateless_shuffle(tf.range(3), order_seed)

    def brightness(x, f):
        return _blend(x, tf.zeros_like(x), f)

    def contrast(x, f):
        return _blend(x, tf.reduce_mean(_grayscale(x)), f)

    def saturation(x, f):
        return _blend(x, _grayscale(x), f)

    ops = (brightness, contrast, saturation)
    for k in range(3):
        image = tf.switch_case(
            order[k], [lambda op=op, j=j, x=image: op(x, factors[j]) for j, op in enumerate(ops)])
    return image


def _pca_lighting(image: tf.Tensor, alpha_std: float, seed: tf.Tensor) -> tf.Tensor:
    """AlexNet-style PCA lighting noise on an RGB image in [0, 1]."""
    if image.shape[-1] != 3:
        raise ValueError(f"PCA lighting needs RGB images, got {image.shape[-1]} channels")
    alpha = tf.random.stateless_normal([3], seed, stddev=alpha_std)
    rgb = tf.linalg.matvec(tf.constant(IMAGENET_EIGVEC), alpha * tf.constant(IMAGENET_EIGVAL))
    return image + rgb
