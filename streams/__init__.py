"""The stream layer, one folder per stage: ``scoring``, ``shadows``, ``learning``,
``monitoring``, ``runtime`` and ``cli``; what they share sits here (the pipeline ``spec``,
deployment ``settings``, ``metrics`` and ``errors``)."""
