ALTER TABLE job_runs DROP COLUMN last_ok_at;
