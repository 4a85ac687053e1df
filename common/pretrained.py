"""ImageNet-pretrained bases from `keras.applications`, with clear errors.

Keras downloads the weights on first use, which fails offline; a local copy of
the same `.h5` file then stands in for it. Either way, a missing or damaged
weight file stops the run with one line that says what to pass instead.
"""

import os

from common import UserError, data, reason

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The file that weights="imagenet" keeps in the Keras cache for a base
# without its top, and the md5 Keras checks it against (keras.applications).
_IMAGENET_FILES = {"Xception": ("xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "b0042744bf5b25fce3cb969f33bebb97")}


def pretrained_base(application, weights, input_shape, **kwargs):
    """`application(include_top=False, ...)`, such as `keras.applications.Xception`,
    with `weights` "imagenet" (the Keras download), a path to a local `.h5`
    weight file without the top, or "none" (random weights)."""
    name = application.__name__
    if weights.lower() == "none":
        print(
            f"warning   weights=none: {name} starts from random weights, so this trains "
            "from scratch and is not transfer learning; expect far lower accuracy"
        )
        return application(include_top=False, weights=None, input_shape=input_shape, **kwargs)
    check_weights(weights, name)
    try:
        base = application(include_top=False, weights=weights, input_shape=input_shape, **kwargs)
    except Exception as error:  # Keras raises many kinds: offline, bad shapes, bad files.
        if weights == "imagenet":
            raise UserError(
                f"could not build {name} with its ImageNet weights ({reason(error)}); when offline, "
                f"pass --weights=path/to/the {name} ImageNet weights file without top (.h5)"
            ) from None
        raise UserError(
            f"could not load {name} weights from {weights} ({reason(error)}); give {name}'s "
            "ImageNet weights without top (.h5)"
        ) from None
    where = weights if weights == "imagenet" else f"{weights} ({os.path.getsize(weights) / 1e6:.1f} MB)"
    print(f"weights   {name} pretrained on ImageNet: {where}")
    return base


def check_weights(weights, name):
    """Stops with one line if `weights` names a local file that is missing,
    unreadable or not an HDF5 file, or if it is "imagenet" and the Keras
    cache holds a copy that fails Keras' check; a script calls it before the
    slow work (loading the photos) so that a wrong path stops it at once."""
    if weights.lower() == "none":
        return
    if weights == "imagenet":
        if name in _IMAGENET_FILES:
            # Keras would delete a cached copy that fails its check, and
            # offline not get another: a copy the user put there would be lost.
            file_name, md5 = _IMAGENET_FILES[name]
            cached = os.path.join(data.keras_cache_dir(subdir="models"), file_name)
            data.verified_in_cache(cached, md5, "the file Keras verifies", f"pass --weights={cached}")
        return
    if not os.path.isfile(weights):  # Missing, or a folder, a pipe, ...
        what = "is not a file" if os.path.exists(weights) else "does not exist"
        raise UserError(
            f"weights file {weights!r} {what}; give the path to {name}'s ImageNet "
            "weights without top (.h5), 'imagenet' to download them, or 'none'"
        )
    try:
        with open(weights, "rb") as f:
            signature = f.read(len(_HDF5_SIGNATURE))
    except OSError as error:
        raise data.unreadable(weights, error) from None
    if signature != _HDF5_SIGNATURE:
        raise UserError(
            f"{weights} is not an HDF5 (.h5) weight file; it may be truncated or "
            f"corrupt: replace it with a fresh copy of {name}'s weights"
        )
