"""Statistics for driftdeck: profiles, univariate and multivariate drift, prediction health.

A pure library (numpy, pandas, scipy, scikit-learn); its only I/O is JSON
(de)serialisation of profiles. Import each module by name: a profile (what a
streamed scan builds) never loads SciPy or scikit-learn, which the drift
tests and the domain classifier need.
"""
