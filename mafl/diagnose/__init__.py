"""``mafl diagnose``: what a society's last round does with round 1, per round-1 agreement pattern (critic accuracy
against an independent fresh sample, kept/adopted/new answers, flips, teacher-forced probabilities of the gold
answer in the critic's and the round-1 context, summary exactness and copy probabilities). See docs/diagnose.md.

* :mod:`mafl.diagnose.patterns`: agreement patterns and answer moves;
* :mod:`mafl.diagnose.summaries`: summary exactness;
* :mod:`mafl.diagnose.references`: the reference response of a problem;
* :mod:`mafl.diagnose.spans`: the log-probability of part of a scored response;
* :mod:`mafl.diagnose.probe`: the rows of a diagnosis and their statistics;
* :mod:`mafl.diagnose.table`: the markdown table;
* :mod:`mafl.diagnose.command`: the command.
"""
