DROP TABLE billing_settings;
DROP TABLE job_runs;
DROP TABLE billing_audit_log;
DROP TABLE usage_reservations;
