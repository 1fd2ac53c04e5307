# Rails / ActiveRecord (config/initializers/ryw.rb): every connection the
# pool checks out is bound to the ryw session of the request being served,
# so a read sees that user's writes whichever pooled connection made them.
# Set RywSession.key per request before the first query, e.g. in a Rack
# middleware from the signed session cookie: RywSession.key = "user-#{id}".
require "active_record"

class RywSession < ActiveSupport::CurrentAttributes
  attribute :key
end

ActiveSupport.on_load(:active_record) do
  ActiveRecord::ConnectionAdapters::AbstractAdapter.set_callback(:checkout, :after) do |conn|
    key = RywSession.key
    conn.execute(key ? "SELECT set_config('ryw.session', #{conn.quote(key)}, false)" : "RESET ryw.session")
  end
end
