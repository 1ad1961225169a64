"""Images in: one decoder (:mod:`camlens.images.decode`: EXIF, format allow-list, limits, file
scans and URIs, folder labels), model-ready batches (:mod:`~camlens.images.load`,
:mod:`~camlens.images.preprocessing`), class names (:mod:`~camlens.images.labels`) and
ground-truth boxes (:mod:`~camlens.images.annotations`)."""
