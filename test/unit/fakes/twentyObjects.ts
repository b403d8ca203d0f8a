import type { TwentyObject } from '../../../src/twenty/types.js';

/** Twenty's `person` object in one workspace, with the fields a test names (name -> Twenty field type). */
export function twentyPerson(fields: Record<string, string>): TwentyObject {
  return {
    id: '20202020-0000-4000-8000-000000000001',
    workspaceId: '3be9d202-5461-4881-a6de-4c1f96e4b02d',
    nameSingular: 'person',
    isCustom: false,
    schema: 'workspace_x',
    table: 'person',
    fields: Object.entries(fields).map(([name, type]) => ({ name, type, joinColumn: null })),
  };
}

/** A row of Twenty's person table (name, emails, job title) for the object twentyPerson makes; `extra` adds columns. */
export function twentyPersonRow(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'a0000000-0000-4000-8000-000000000001',
    nameFirstName: 'Ada',
    nameLastName: 'Lovelace',
    emailsPrimaryEmail: 'ada@example.com',
    emailsAdditionalEmails: null,
    jobTitle: 'Engineer',
    ...extra,
  };
}
