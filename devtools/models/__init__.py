"""Training and back-testing the hub's scores (``zhongtai models train|backtest|ceiling|snapshot``).

- :mod:`devtools.models.dataset`: a population's events replayed into a hub database (the hub's
  own fold and fact writer), its monthly point-in-time snapshots (services/data_hub/snapshots.py)
  and the truth read from the later facts (who left, who opened what);
- :mod:`devtools.models.train`: logistic scorecards fitted with scikit-learn, written as the
  versioned artifact the hub loads (services/data_hub/model.py);
- :mod:`devtools.models.metrics`: ROC AUC, top-decile lift, recall, lead times, hit rates (pure);
- :mod:`devtools.models.backtest`: train on earlier months, evaluate on later months and on a
  held-out seed; table, HTML report with ROC and lift curves, one summary line;
- :mod:`devtools.models.ceiling`: the same churn rows scored from the simulator's hidden state
  (how high any score could go on a population).
"""
