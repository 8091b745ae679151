"""The layer search and NetAdapt share: data sets, proxy training, candidate evaluation, Ray
execution and run directories. Imports :mod:`latency` and :mod:`search_spaces`, nothing above."""
