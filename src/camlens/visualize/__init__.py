"""Maps made visible: colormaps and overlays (:mod:`camlens.visualize.overlay`), drawing and panels
(:mod:`~camlens.visualize.render`), boxes from a
thresholded map (:mod:`~camlens.visualize.boxes`), detection and clip renderings
(:mod:`~camlens.visualize.tasks`), matplotlib figures (:mod:`~camlens.visualize.figures`) and
the notebook display (:mod:`~camlens.visualize.display`)."""
