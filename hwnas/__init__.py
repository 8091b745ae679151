"""The top layer: the experiment pipeline, MobileNetV3's Table 3, reports, the ``nas`` and
``netadapt`` commands and the public Python API. It may import every package below it
(:mod:`nas`, :mod:`netadapt`, :mod:`evaluation`, :mod:`latency`, :mod:`search_spaces`); none of
them imports it."""
