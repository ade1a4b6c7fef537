# ActiveRecord (Debian's ruby-activerecord 6.1 and ruby-pg) against
# lockfence.lock_version_check and the row-lock helpers, run by
# t/021_orm.pl.
#
# Two tables with the same model: accounts, with the trigger that a Rails
# user adds in a migration, and plain_accounts, without it (the control).
# The same scenarios run against both: create, save!, update!, a stale save
# (StaleObjectError), a save that waits for a concurrent one, with_lock,
# increment!, touch, update_columns, and N clients doing read-modify-write
# with retry.  Each observation is checked against its expected value and
# against the control's.  Then lock_row / lock_rows inside ActiveRecord
# transactions, beside lock! and with_lock.
#
# Connection: libpq's PGHOST, PGPORT, PGDATABASE, PGUSER.  Output: one
# "ok - ..." or "not ok - ..." line per check, "# " lines for diagnostics,
# and "done: N checks, F failed" last; the exit status is 0 when all passed.

require 'active_record'

TIME_SCALE = Float(ENV.fetch('LF_TIME_SCALE', '1'))
$checks = 0
$failed = 0

def check(ok, label, detail = nil)
  $checks += 1
  puts "#{ok ? 'ok' : 'not ok'} - activerecord: #{label}"
  unless ok
    $failed += 1
    puts "# #{detail}" if detail
  end
  $stdout.flush
  ok
end

def check_equal(got, want, label)
  check(got == want, label, "got #{got.inspect}, want #{want.inspect}")
end

def interval(seconds)
  "#{(seconds * TIME_SCALE * 1000).round} ms"
end

# The exception class a block raises, or :none.
def outcome
  yield
  :none
rescue StandardError => e
  e.class
end

# The block's value, or the class of the exception it raises.
def value_or_error
  yield
rescue StandardError => e
  e.class
end

ActiveRecord::Base.establish_connection(
  adapter: 'postgresql',
  host: ENV.fetch('PGHOST'),
  port: ENV.fetch('PGPORT'),
  database: ENV.fetch('PGDATABASE'),
  username: ENV.fetch('PGUSER'),
  pool: 12
)
ActiveRecord::Migration.verbose = false

# What a Rails application has: the table with lock_version ...
class CreateAccounts < ActiveRecord::Migration[6.1]
  def change
    %i[accounts plain_accounts].each do |name|
      create_table name, force: true do |t|
        t.string :owner
        t.integer :balance, null: false, default: 0
        t.integer :lock_version, null: false, default: 0
        t.timestamps
      end
    end
  end
end

# ... and what lockfence asks it to add: one migration with the trigger.
class AddLockVersionCheck < ActiveRecord::Migration[6.1]
  def up
    execute <<~SQL
      CREATE TRIGGER accounts_lock_version BEFORE INSERT OR UPDATE ON accounts
        FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
    SQL
  end

  def down
    execute 'DROP TRIGGER accounts_lock_version ON accounts'
  end
end

CreateAccounts.migrate(:up)
AddLockVersionCheck.migrate(:up)

class Account < ActiveRecord::Base
end

class PlainAccount < ActiveRecord::Base
end

# The row as stored, read on a connection of its own.
def stored(model, id)
  model.connection_pool.with_connection do |c|
    c.select_rows("SELECT balance, lock_version FROM #{model.table_name} WHERE id = #{Integer(id)}").first
  end
end

# Runs the scenarios on one model and returns what was observed.
def scenarios(model)
  seen = {}

  a = model.create!(owner: 'alice', balance: 1000)
  seen[:create] = [a.lock_version, stored(model, a.id)]

  a.balance = 900
  a.save!
  seen[:save] = [a.lock_version, stored(model, a.id)]

  a.update!(balance: 800)
  seen[:update] = [a.lock_version, stored(model, a.id)]

  # two clients read version 2; the second one's save is stale
  first = model.find(a.id)
  second = model.find(a.id)
  first.update!(balance: 700)
  second.balance = 100
  seen[:stale_save] = [outcome { second.save! }, second.lock_version, stored(model, a.id)]
  second.reload
  second.update!(balance: 650)
  seen[:after_reload] = [second.lock_version, stored(model, a.id)]

  # a save that waits behind a concurrent, uncommitted one: PostgreSQL
  # re-evaluates the ORM's WHERE clause on the new row version, so the
  # waiting save matches no row and gets the ORM's own error
  waiting = model.find(a.id)
  holder_updated = Queue.new
  may_commit = Queue.new
  holder = Thread.new do
    model.connection_pool.with_connection do
      model.transaction do
        h = model.find(a.id)
        h.update!(balance: 600)
        holder_updated << true
        may_commit.pop
      end
    end
  end
  holder_updated.pop
  waiting.balance = 1
  waiter = Thread.new { outcome { waiting.save! } }
  sleep 0.3 * TIME_SCALE
  waiter_was_waiting = waiter.alive?
  may_commit << true
  holder.join
  seen[:concurrent_save] = [waiter_was_waiting, waiter.value, stored(model, a.id)]

  a.reload
  a.with_lock do
    a.balance -= 50
    a.save!
  end
  seen[:with_lock] = [a.lock_version, stored(model, a.id)]

  a.increment!(:balance, 5)
  seen[:increment] = [a.lock_version, stored(model, a.id)]
  a.update!(owner: 'bob')
  seen[:save_after_increment] = [a.lock_version, stored(model, a.id)]

  a.touch
  seen[:touch] = [a.lock_version, stored(model, a.id)]

  a.update_columns(balance: 10)
  seen[:update_columns] = [a.lock_version, stored(model, a.id)]
  a.update!(balance: 20)
  seen[:save_after_update_columns] = [a.lock_version, stored(model, a.id)]

  seen[:race] = race(model)
  seen
end

# CLIENTS threads add 1 to one balance SAVES times each through optimistic
# locking, retrying on StaleObjectError; returns [final balance == successful
# saves, lock_version == saves, retries happened].
CLIENTS = 6
SAVES = 15

def race(model)
  counter = model.create!(owner: 'race', balance: 0)
  retries = Queue.new
  errors = Queue.new
  threads = Array.new(CLIENTS) do
    Thread.new do
      model.connection_pool.with_connection do
        saved = 0
        while saved < SAVES
          begin
            row = model.find(counter.id)
            row.balance += 1
            sleep rand * 0.005 * TIME_SCALE
            row.save!
            saved += 1
          rescue ActiveRecord::StaleObjectError
            retries << 1
          rescue StandardError => e
            errors << e
            break
          end
        end
      end
    end
  end
  threads.each(&:join)
  errors.size.times { |i| puts "# race error #{i}: #{errors.pop.inspect}" }
  balance, version = stored(model, counter.id)
  [balance == CLIENTS * SAVES, version == CLIENTS * SAVES, errors.empty?, !retries.empty?]
end

expected = {
  create: [0, [1000, 0]],
  save: [1, [900, 1]],
  update: [2, [800, 2]],
  stale_save: [ActiveRecord::StaleObjectError, 2, [700, 3]],
  after_reload: [4, [650, 4]],
  concurrent_save: [true, ActiveRecord::StaleObjectError, [600, 5]],
  with_lock: [6, [550, 6]],
  increment: [7, [555, 7]],
  save_after_increment: [8, [555, 8]],
  touch: [9, [555, 9]],
  update_columns: [9, [10, 9]],
  save_after_update_columns: [10, [20, 10]],
  race: [true, true, true, true]
}

with_trigger = scenarios(Account)
control = scenarios(PlainAccount)
expected.each do |name, want|
  check_equal(with_trigger[name], want, "#{name} with the trigger")
  check_equal(with_trigger[name], control[name], "#{name} as without the trigger")
end

# The trigger's own job, which the control cannot do: a writer outside the
# ORM that sends back a stale version is refused with 40001.
a = Account.create!(owner: 'carol', balance: 100)
a.update!(balance: 90)
stale = Account.connection.exec_update(
  "UPDATE accounts SET balance = 0, lock_version = 0 WHERE id = #{a.id}"
) rescue $!
check_equal(stale.class, ActiveRecord::SerializationFailure,
            'a raw-SQL writer with a stale version gets SerializationFailure (40001)')
check_equal(stored(Account, a.id), [90, 1], '... and writes nothing')
plain = PlainAccount.create!(owner: 'carol', balance: 100)
plain.update!(balance: 90)
PlainAccount.connection.exec_update(
  "UPDATE plain_accounts SET balance = 0, lock_version = 0 WHERE id = #{plain.id}"
)
check_equal(stored(PlainAccount, plain.id), [0, 0],
            'without the trigger the same stale write is a lost update')

#---- lock_row / lock_rows inside ActiveRecord transactions ----

def other_connection_lock_row(id, timeout)
  Thread.new do
    Account.connection_pool.with_connection do |c|
      value_or_error { c.select_value("SELECT lockfence.lock_row('accounts', #{Integer(id)}, '#{interval(timeout)}')") }
    end
  end.value
end

x = Account.create!(owner: 'x', balance: 100)
y = Account.create!(owner: 'y', balance: 100)
conn = Account.connection

Account.transaction do
  before = conn.select_rows('SELECT pg_backend_pid(), txid_current()').first
  locked = conn.select_value("SELECT lockfence.lock_row('accounts', #{x.id}, '2 s')")
  after = conn.select_rows('SELECT pg_backend_pid(), txid_current()').first
  check_equal(locked, true, 'lock_row inside Account.transaction returns true')
  check_equal(after, before, '... on the transaction\'s own connection, in the same transaction')
  row = Account.find(x.id)
  row.balance -= 10
  row.save!
  check_equal(other_connection_lock_row(x.id, 0.2), ActiveRecord::LockWaitTimeout,
              '... and holds the row: another connection\'s lock_row times out (LockWaitTimeout)')
  check_equal(conn.select_value('SHOW lock_timeout'), '0',
              '... without changing the session\'s lock_timeout')
end
check_equal(stored(Account, x.id), [90, 1], 'the save in that transaction committed')
check_equal(other_connection_lock_row(x.id, 0.2), true, 'after COMMIT another connection locks the row')

# lock_rows inside with_lock: the record's own row and another, no deadlock
x.reload
x.with_lock do
  n = conn.select_value("SELECT lockfence.lock_rows('accounts', ARRAY[#{y.id}, #{x.id}]::bigint[], '2 s')")
  check_equal(n, 2, 'lock_rows inside with_lock locks both rows, the record\'s own included')
  check_equal(other_connection_lock_row(y.id, 0.2), ActiveRecord::LockWaitTimeout,
              '... until the with_lock block ends')
  x.balance += 1
  x.save!
end
check_equal(other_connection_lock_row(y.id, 0.2), true, 'with_lock\'s COMMIT released them')

# lock! first, then lock_row on the same row in the same transaction
Account.transaction do
  x.lock!
  check_equal(conn.select_value("SELECT lockfence.lock_row('accounts', #{x.id}, '1 s')"), true,
              'lock_row after lock! in one transaction: the row is already ours')
end

# Timeout inside an ORM transaction: another client holds the row with
# with_lock; lock_row raises LockWaitTimeout, the transaction rolls back, and
# the connection keeps working.
held = Queue.new
release = Queue.new
holder = Thread.new do
  Account.connection_pool.with_connection do
    Account.find(y.id).with_lock do
      held << true
      release.pop
    end
  end
end
held.pop
started = Time.now
timed_out = outcome do
  Account.transaction do
    Account.find(x.id).update!(balance: 0)
    conn.select_value("SELECT lockfence.lock_row('accounts', #{y.id}, '#{interval(0.3)}')")
  end
end
waited = Time.now - started
check_equal(timed_out, ActiveRecord::LockWaitTimeout, 'lock_row past its timeout raises LockWaitTimeout')
check(waited >= 0.25 * TIME_SCALE && waited < 5 * TIME_SCALE,
      '... after about its timeout', "waited #{waited.round(3)} s for #{interval(0.3)}")
check_equal(stored(Account, x.id)[0], 91, '... and the transaction rolled back')
check_equal(conn.select_value('SELECT 1'), 1, '... and the connection keeps working')
check_equal(conn.select_value('SHOW lock_timeout'), '0', '... with its lock_timeout unchanged')
release << true
holder.join

ActiveRecord::Base.connection.drop_table :accounts
ActiveRecord::Base.connection.drop_table :plain_accounts
puts "done: #{$checks} checks, #{$failed} failed"
exit($failed.zero? ? 0 : 1)
