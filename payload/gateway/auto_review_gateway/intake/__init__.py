"""What every POST endpoint reads and answers: the request's fields checked, who sent it
(a signature or a bearer token), the reply, and the hand-off to the queue (through a
protocol: it imports no queue). May import ``core`` only.
"""
