"""Reports for people: velocity and quality (``velocity``), system health (``health``)
and the metric families (``families``), computed from the database and the scrape's
own state. The admin pages and the summary API render the same dictionaries; nothing
here knows HTTP.
"""
