-- Per run (jobs.workload): windows, mean compute s, engine ms per token, mean window-end overhead s, mean
-- re-prediction s (where one was made), mean gap s between a job's consecutive windows (none yielded here).
WITH w AS (SELECT j.workload, w.job_id, w.index, w.started_at, w.ended_at, w.compute_s, w.overhead_s, w.predict_s,
                  w.num_tokens, w.prediction_after,
                  lag(w.ended_at) OVER (PARTITION BY w.job_id ORDER BY w.index) AS prev_end
           FROM windows w JOIN jobs j ON j.id = w.job_id)
SELECT workload, count(*) AS windows, round(avg(compute_s)::numeric, 3) AS compute,
       round((sum(compute_s) / sum(num_tokens) * 1000)::numeric, 2) AS ms_per_token,
       round(avg(overhead_s)::numeric, 4) AS overhead, round(avg(predict_s)::numeric, 4) AS predict,
       count(prediction_after) AS re_predictions,
       round(avg(extract(epoch FROM started_at - prev_end))::numeric, 4) AS gap_between
FROM w WHERE workload LIKE 'compare-12052%' GROUP BY 1 ORDER BY 1;
