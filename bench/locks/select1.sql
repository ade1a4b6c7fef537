-- Baseline 3: the round-trip ceiling.
SELECT 1;
