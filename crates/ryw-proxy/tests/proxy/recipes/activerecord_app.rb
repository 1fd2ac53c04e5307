# An ActiveRecord app on its connection pool (3 connections) through ryw
# proxy, each request on a thread of its own (as Puma serves them) checking
# a connection out of the pool and back in, as Rails does around every
# request. It runs pooled.py's workload: a user writes a value through one
# request and reads it back through the next, thinking THINK_MS between
# pairs; the write's request answers the user, then finishes its own work
# before it gives its connection back, and the read arrives meanwhile, so
# the pool hands it another connection.
#
#   ruby -I recipes/activerecord activerecord_app.rb HOST PORT bound|control PAIRS THINK_MS
#
# `bound` loads the recipe (recipes/activerecord/ryw.rb) and sets
# RywSession.key around each of the user's requests, as a Rack middleware
# would; `control` does neither. Judged as pooled.py judges; prints one
# JSON line.
require "json"
require "active_record"

host, port, mode, pairs, think = ARGV
raise "mode #{mode}" unless %w[bound control].include?(mode)
BOUND = mode == "bound"
require "ryw" if BOUND

# ActiveRecord sends `SET standard_conforming_strings = on` on every new
# connection: a setting like any other for the proxy (only `off` keeps a
# session on the leader), so nothing is skipped here.
ActiveRecord::Base.establish_connection(
  adapter: "postgresql", host: host, port: Integer(port), database: "ryw",
  username: "postgres", pool: 3, checkout_timeout: 10
)

scs = ActiveRecord::Base.connection_pool.with_connection do |c|
  c.raw_connection.parameter_status("standard_conforming_strings")
end
raise "standard_conforming_strings is #{scs.inspect}, not on" unless scs == "on"

class Kv < ActiveRecord::Base
  self.table_name = "kv"
  self.primary_key = "k"
end

# One request on a thread of its own: the user's session set around it
# (none for an anonymous one), a connection checked out for it.
def request(user)
  Thread.new do
    served = -> { ActiveRecord::Base.connection_pool.with_connection { |c| yield c } }
    BOUND && user ? RywSession.set(key: user) { served.call } : served.call
  end
end

out = { pairs: 0, crossed: 0, stale: 0, stale_crossed: 0, ports: Hash.new(0), errors: [] }
key = "activerecord-#{mode}"
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
(1..Integer(pairs)).each do |i|
  answered = Queue.new
  finish = Queue.new
  writing = request("user-1") do |c|
    Kv.upsert({ k: key, v: i })
    answered.push(c.raw_connection.backend_pid)
    finish.pop
  rescue StandardError => e
    answered.push(e)
  end
  begin
    wrote_on = answered.pop
    raise wrote_on if wrote_on.is_a?(Exception)

    value, server, read_on = request("user-1") do |c|
      v, p = Kv.where(k: key).pick(:v, Arel.sql("inet_server_port()"))
      [v || 0, p, c.raw_connection.backend_pid]
    end.value
    crossed = wrote_on != read_on ? 1 : 0
    out[:pairs] += 1
    out[:crossed] += crossed
    if value < i
      out[:stale] += 1
      out[:stale_crossed] += crossed
    end
    out[:ports][server.to_s] += 1
  rescue StandardError => e
    out[:errors] << "#{key} pair #{i}: #{e.class}: #{e.message}"[0, 300]
  ensure
    finish.push(:done)
    writing.join
  end
  sleep(Integer(think) / 1000.0)
end
out[:seconds] = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(3)
# The session each kind of request runs in: the user's, and none for an
# anonymous one.
show = ->(c) { c.select_value("SHOW ryw.session") }
out[:sessions] = { user: request("user-1", &show).value, anonymous: request(nil, &show).value }
puts JSON.generate(out)
