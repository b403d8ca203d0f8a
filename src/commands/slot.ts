import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import { BridgeError } from '../errors.js';
import { resetSlot } from '../replication/slot.js';

export function registerSlotCommands(program: Command, configFrom: ConfigFrom, withClient: WithClient): void {
  const slot = program.command('slot').description('the replication slot');
  slot
    .command('reset')
    .description('recovery after a lost or dropped slot: create a new slot at the current position (changes in the gap are not delivered)')
    .option('--yes', 'confirm that changes between the old slot position and now will not be delivered')
    .action(async (opts: { yes?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      if (!opts.yes) throw new BridgeError('ERR_USAGE', 'slot reset skips every change not yet delivered; run again with --yes to confirm');
      await withClient(config, async (client) => {
        const info = await resetSlot(client, config.replication.slot, config.schema);
        console.log(`slot "${info.slotName}" created at ${info.confirmedFlushLsn}; the bridge streams from here`);
      });
    });
}
