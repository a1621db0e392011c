"""The conversation rules: what a business decided about when and how the bot answers.

Owns config validation (`configs`), the options' definitions and their frozen `Options`
(`options`), triggers, groups, opening hours, takeover and pauses (`conversations`), daily
budgets and text normalisation. Plain functions over the
storage models; never imports the reply pipeline, the broker or the LLM boundary's calls.
"""
