-- When each job last finished without error: its freshness alert reads this, and the last
-- outcome alone forgets it as soon as one run fails.
ALTER TABLE job_runs ADD COLUMN last_ok_at BIGINT;
UPDATE job_runs SET last_ok_at = last_finished_at WHERE last_outcome = 'ok';
