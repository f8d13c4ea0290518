"""Charts of the app, one module per page.

Each chart is two steps, as optuna's visualization modules do: a pure ``*_info``
function (frames in, a small frozen dataclass out; unit-tested without Streamlit) and
a thin ``*_chart`` function that turns the info into an Altair chart. Pages only call
the two and hand the chart to ``st.altair_chart``. No module here imports Streamlit.
``bigmap`` is the one exception to Altair: maps too large for Vega-Lite become a pydeck
``Deck`` for ``st.pydeck_chart`` (deck.gl), its info step building the layers' JSON.

Sizes, as Streamlit 1.67 draws them (measured in the browser): a chart stretched to its
column is fitted, so a single chart's ``height`` is the whole chart, title, axes and
legend included; a discrete axis given a fixed height squeezes its bands, so discrete
axes are sized by step (``alt.Step``); panels of a concatenated chart keep their sizes.
"""
