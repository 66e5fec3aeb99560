-- windows.sql split by whether the window re-predicted: the window-end time (overhead_s, which holds the
-- re-prediction) and the gap to the job's next window.
WITH w AS (SELECT j.workload, w.predict_s, w.overhead_s,
                  extract(epoch FROM w.started_at - lag(w.ended_at) OVER (PARTITION BY w.job_id ORDER BY w.index)) AS gap
           FROM windows w JOIN jobs j ON j.id = w.job_id WHERE j.workload LIKE 'compare-12052%')
SELECT workload, predict_s IS NOT NULL AS re_predicted, count(*), round(avg(overhead_s)::numeric, 4) AS overhead,
       round(avg(predict_s)::numeric, 4) AS predict, round(avg(gap)::numeric, 4) AS gap
FROM w GROUP BY 1, 2 ORDER BY 1, 2;
