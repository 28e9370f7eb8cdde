"""
End-to-end tests: a real C{twistd -n ace-mail} process against real SMTP
sinks on 127.0.0.1.
"""
