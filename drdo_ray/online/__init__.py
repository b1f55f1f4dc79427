"""Online rounds (the pipeline's ``online`` section): each round, every method's current policy
samples fresh prompts, the Oracle scores the samples, pairs are built from its rewards and the
method trains on them; held-out win rates follow each round (docs/online.md).

The rounds are pipeline steps built from the existing stages (generate, score, train, eval
winrate), planned by :mod:`drdo_ray.online.rounds` and run by :func:`drdo_ray.pipeline.run_pipeline`.
:mod:`~drdo_ray.online.pairs` holds the pair rules (pure), :mod:`~drdo_ray.online.pair_stage` the
step that scores samples and writes the round's pairs, :mod:`~drdo_ray.online.round_record` a
finished round's record."""
