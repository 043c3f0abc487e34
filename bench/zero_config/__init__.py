"""Choose and check the calibration-free default schedule (meancache_kernels.default_rule).

    python -m bench.zero_config              # selection + held-out evaluation, writes bench/results/zero_config.*
    python -m bench.zero_config --smoke      # tiny version of every stage (< 1 min), writes to a temp folder

A candidate rule (meancache_kernels.default_rule.Rule) says, from N, B and the sigmas only, which steps run the
model (warm-up steps, spacing evenly in a blend of step index and sigma, optional warp, last step computed or not)
and which polynomial estimator each skipped step uses (by the length of its gap). The run has two disjoint halves:

SELECTION (chooses the constants):
  - analytic flows GaussianMixtureFlow.random with seeds 100..102 (dims 16/64/32), shifts 1, 3, 6, N = 50 and 28,
    32 latents each; quality = -20 log10(relative RMSE of the final latent vs the N-step Euler output) [dB];
  - the shipped tiny FluxPipeline on 8 SELECTION prompts (noise seeds 300..), N = 50 and 28; quality = mean PSNR of
    the decoded images vs the uncached N-step output.
  Score of a rule = min(mean dB gain over uniform taylorc2 on the flow settings, the same on the pipeline settings):
  a rule must gain on both kinds of data, not trade one for the other. Stage 1 scores every spacing with taylorc2 on
  the flows; a shortlist (the 2 best per alpha, and evenly spaced steps with warm-up / warp) is scored on the
  pipeline too; stage 2 picks the estimator (per gap length) for the chosen spacing, once over every polynomial
  estimator and once over taylor1/taylor2 only (the preference used where the corrector is not
  allowed).

EVALUATION (never used for choosing): the 8 flows of bench/results/frontier.md and frontier_flows_heldout.md (seeds 0,
1, 11..16, their 256 evaluation latents, so numbers compare with those files' rows) at N = 50, 28, 20; the shipped
model on bench/frontier's 8 evaluation prompts (seeds 0..7) and the second model bench/tiny_flux_seed1 (never
seen in selection), N = 50, 28, 20. The rule evaluated is the one this run's selection picked; the report says whether
the package's DEFAULT_RULE equals it (tests/core/test_default_schedule.py checks that the shipped DEFAULT_RULE is
the one recorded in bench/results/zero_config.json).
"""
