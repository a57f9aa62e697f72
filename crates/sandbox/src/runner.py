"""AlgoAgent's backtest runner: runs inside the sandbox, never on the host.

Reads /input/params.json, loads the user's strategy from /input/strategy.py,
finds its backtesting.Strategy subclass, runs backtesting.py on each
symbol's OHLCV CSV, and writes one JSON document to the result descriptor
(the user's prints go to stderr). NaN and Inf become null.
"""

import json
import math
import os
import sys
import time
import traceback

# The run's inputs: /input in the sandbox; a directory given on the command
# line when the benchmark runs the same thing without one.
INPUT = sys.argv[1] if len(sys.argv) > 1 else "/input"
RESULT_FD = os.dup(1)
os.dup2(2, 1)  # the strategy's prints go to stderr; stdout is ours alone
T0 = time.monotonic()


def finite(value):
    """A JSON-safe scalar: NaN/Inf → None, numpy and pandas types unwrapped."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "total_seconds"):  # Timedelta, as "423 days 00:00:00"
        try:
            seconds = value.total_seconds()
        except Exception:
            return None
        return None if seconds != seconds else str(value)
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except Exception:  # NaT
            return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    return str(value)


def emit(document, code):
    with os.fdopen(RESULT_FD, "w") as out:
        json.dump(document, out, allow_nan=False)
    sys.exit(code)


def fail(kind, message, tb=None):
    emit({"ok": False, "error_type": kind, "error_message": message, "traceback": tb}, 1)


def strategy_class(module, Strategy):
    own = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy
        and value.__module__ == module.__name__
    ]
    if not own:
        fail("NoStrategy", "The code defines no subclass of backtesting.Strategy.")
    return own[-1]


def metrics(stats):
    get = stats.get
    return {
        "start_date": finite(get("Start")),
        "end_date": finite(get("End")),
        "duration": finite(get("Duration")),
        "exposure_time": finite(get("Exposure Time [%]")),
        "equity_final": finite(get("Equity Final [$]")),
        "equity_peak": finite(get("Equity Peak [$]")),
        "return_pct": finite(get("Return [%]")),
        "buy_hold_return": finite(get("Buy & Hold Return [%]")),
        "return_ann": finite(get("Return (Ann.) [%]")),
        "volatility_ann": finite(get("Volatility (Ann.) [%]")),
        "sharpe_ratio": finite(get("Sharpe Ratio")),
        "sortino_ratio": finite(get("Sortino Ratio")),
        "calmar_ratio": finite(get("Calmar Ratio")),
        "max_drawdown": finite(get("Max. Drawdown [%]")),
        "avg_drawdown": finite(get("Avg. Drawdown [%]")),
        "total_trades": finite(get("# Trades")),
        "win_rate": finite(get("Win Rate [%]")),
        "best_trade": finite(get("Best Trade [%]")),
        "worst_trade": finite(get("Worst Trade [%]")),
        "avg_trade": finite(get("Avg. Trade [%]")),
        "profit_factor": finite(get("Profit Factor")),
    }


def trades(stats, limit):
    frame = stats.get("_trades")
    rows = []
    if frame is None:
        return rows
    for record in frame.head(limit).to_dict("records"):
        rows.append({
            "size": finite(record.get("Size")),
            "entry_bar": finite(record.get("EntryBar")),
            "exit_bar": finite(record.get("ExitBar")),
            "entry_price": finite(record.get("EntryPrice")),
            "exit_price": finite(record.get("ExitPrice")),
            "pnl": finite(record.get("PnL")),
            "return_pct": finite(record.get("ReturnPct") * 100 if record.get("ReturnPct") is not None else None),
            "entry_time": finite(record.get("EntryTime")),
            "exit_time": finite(record.get("ExitTime")),
            "duration": finite(record.get("Duration")),
        })
    return rows


def equity_curve(stats, points):
    frame = stats.get("_equity_curve")
    if frame is None or len(frame) == 0:
        return []
    step = max(1, len(frame) // points)
    sampled = frame.iloc[::step]
    if sampled.index[-1] != frame.index[-1]:
        sampled = sampled._append(frame.iloc[[-1]]) if hasattr(sampled, "_append") else sampled
    return [
        {"date": finite(index), "equity": finite(row["Equity"]), "drawdown_pct": finite(row.get("DrawdownPct", 0) * 100)}
        for index, row in sampled.iterrows()
    ]


# `period`: how far back from the end of the series (or end_date).
PERIOD_DAYS = {"1mo": 31, "3mo": 92, "6mo": 183, "1y": 366, "2y": 731, "5y": 1827, "10y": 3653}


def main():
    with open(os.path.join(INPUT, "params.json")) as handle:
        params = json.load(handle)
    try:
        import importlib.util
        import pandas as pd
        from backtesting import Backtest, Strategy
    except Exception as err:  # the environment itself is broken
        fail("EnvironmentError", f"{type(err).__name__}: {err}", traceback.format_exc())
    imported = time.monotonic()
    try:
        spec = importlib.util.spec_from_file_location("user_strategy", os.path.join(INPUT, "strategy.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["user_strategy"] = module
        spec.loader.exec_module(module)
    except SyntaxError as err:
        fail("SyntaxError", f"{err.msg} (line {err.lineno})", traceback.format_exc(limit=-3))
    except BaseException as err:
        fail(type(err).__name__, str(err), traceback.format_exc(limit=-5))
    cls = strategy_class(module, Strategy)
    results = []
    for item in params["symbols"]:
        frame = pd.read_csv(os.path.join(INPUT, item["file"]), index_col=0, parse_dates=True)
        frame = frame[["Open", "High", "Low", "Close", "Volume"]].dropna(subset=["Open", "High", "Low", "Close"])
        if params.get("start_date"):
            frame = frame[frame.index >= pd.Timestamp(params["start_date"])]
        if params.get("end_date"):
            frame = frame[frame.index <= pd.Timestamp(params["end_date"])]
        period = params.get("period")
        if period in PERIOD_DAYS and len(frame):
            frame = frame[frame.index > frame.index[-1] - pd.Timedelta(days=PERIOD_DAYS[period])]
        if len(frame) < 2:
            fail("NoData", f"{item['symbol']}: fewer than 2 bars in the requested dates.")
        try:
            backtest = Backtest(
                frame, cls, cash=params["cash"], commission=params["commission"],
                exclusive_orders=bool(params.get("exclusive_orders", False)), finalize_trades=True,
            )
            stats = backtest.run()
        except BaseException as err:
            fail(type(err).__name__, str(err), traceback.format_exc(limit=-8))
        results.append({
            "symbol": item["symbol"],
            "bars": len(frame),
            "metrics": metrics(stats),
            "trades": trades(stats, int(params.get("max_trades", 1000))),
            "equity_curve": equity_curve(stats, int(params.get("equity_points", 500))),
        })
    emit({
        "ok": True,
        "strategy_class": cls.__name__,
        "results": results,
        "timings": {"import_seconds": imported - T0, "run_seconds": time.monotonic() - imported},
    }, 0)


if __name__ == "__main__":
    main()
