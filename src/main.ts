/**
 * drucof-relay's command line: start (listen + work), listen, work, queue, explain.
 * Exits with a one-line error (no stack) on configuration or Redis problems.
 */
import { Command } from 'commander';
import { ConfigError, DEFAULT_CONFIG, loadConfig } from './config/load.ts';
import { NoRedisError } from './ops/redis-embedded.ts';
import { runUntilSignalled, type Roles } from './cli/start.ts';
import { queueAct, queueList, queueShow } from './cli/queue.ts';
import { explain } from './cli/explain.ts';
import { runConvert } from './cli/convert.ts';
import { listConverters } from './cli/converters.ts';

// `drucof-relay explain ID | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const program = new Command('drucof-relay')
  .description('SMTP smarthost relay: deliver recipient-usable content or fail')
  .showHelpAfterError();

const run = (roles: Roles) => async (opts: { config: string }) => runUntilSignalled(loadConfig(opts.config), roles);
const configOption = ['-c, --config <file>', 'configuration file', DEFAULT_CONFIG] as const;

program.command('start').description('listen for SMTP and deliver queued mail (one process)').option(...configOption).action(run({ listen: true, work: true }));
program.command('listen').description('only accept mail into the queue').option(...configOption).action(run({ listen: true, work: false }));
program.command('work').description('only deliver queued mail').option(...configOption).action(run({ listen: false, work: true }));

program
  .command('convert')
  .description('convert a message (stdin) for a recipient with capabilities EXPR: plan on stderr, message on stdout')
  .requiredOption('--caps <expr>', 'the recipient\'s capabilities, an RFC 2533 expression')
  .option(...configOption)
  .action(async (opts: { caps: string; config: string }) => {
    process.exitCode = await runConvert(loadConfig(opts.config), opts.caps, process.stdin, process.stdout, process.stderr);
  });
program
  .command('converters')
  .description('list the converters loaded (built-in and plug-ins)')
  .option(...configOption)
  .action(async (opts: { config: string }) => listConverters(loadConfig(opts.config), process.stdout));

const queue = program.command('queue').description('inspect the queue of a running relay');
queue
  .command('list')
  .description('list queued messages and their recipients')
  .option(...configOption)
  .action(async (opts: { config: string }) => {
    await queueList(loadConfig(opts.config));
  });
queue
  .command('show')
  .description('show one message: envelope and per-recipient state')
  .argument('<id>', 'queue id')
  .option(...configOption)
  .option('--json', 'machine-readable output')
  .action(async (id: string, opts: { config: string; json?: boolean }) => {
    if (!(await queueShow(loadConfig(opts.config), id, opts.json ?? false))) process.exitCode = 1;
  });

for (const [action, text] of [
  ['retry', 'attempt delivery now (postqueue -i)'],
  ['hold', 'keep a message from being delivered until released (postsuper -h)'],
  ['release', 'release a held message (postsuper -H)'],
] as const) {
  queue
    .command(action)
    .description(text)
    .argument('<id>', 'queue id')
    .option(...configOption)
    .action(async (id: string, opts: { config: string }) => {
      if (!(await queueAct(loadConfig(opts.config), action, id))) process.exitCode = 1;
    });
}
queue
  .command('delete')
  .description('delete a message (postsuper -d); --bounce first sends the failure report to its sender')
  .argument('<id>', 'queue id')
  .option(...configOption)
  .option('--bounce', 'fail the recipients not yet delivered and report it to the sender (as their NOTIFY asks)')
  .action(async (id: string, opts: { config: string; bounce?: boolean }) => {
    const config = loadConfig(opts.config);
    if (!(await queueAct(config, 'delete', id, { bounce: opts.bounce ?? false, ...(config.hostname && { hostname: config.hostname }) }))) process.exitCode = 1;
  });

program
  .command('explain')
  .description('explain per recipient the DRUCOF decision: branch, capabilities and their source, plan, conversion, outcome')
  .argument('<id>', 'queue id')
  .option(...configOption)
  .option('--json', 'machine-readable output: the envelope and recipient states as stored')
  .action(async (id: string, opts: { config: string; json?: boolean }) => {
    if (!(await explain(loadConfig(opts.config), id, opts.json ?? false))) process.exitCode = 1;
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof ConfigError || err instanceof NoRedisError) {
    process.stderr.write(`drucof-relay: ${err.message}\n`);
    process.exit(2);
  }
  // Operational failures (port in use, Redis gone mid-command) get one line; LOG_LEVEL=debug shows the stack.
  if (process.env.LOG_LEVEL === 'debug') throw err;
  process.stderr.write(`drucof-relay: ${(err as Error).message}\n`);
  process.exit(1);
}
