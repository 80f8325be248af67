"""The pages people use: the room page and the console (static files + small handlers).

The pages are plain HTML, CSS and JavaScript shipped as package data; nothing is built.
Neither page has a server session: the room page holds an RTC token, the console an
access key, both only in the browser.
"""
