import { describe, expect, it } from 'vitest';
import { createAttributeReader } from '../../../src/main/engine/reader';

const readGender = createAttributeReader(['male', 'female']);
const readRace = createAttributeReader([
  'white',
  'black or african american',
  'american indian or alaska native',
  'asian',
  'native hawaiian or other pacific islander',
]);

describe('createAttributeReader', () => {
  it('never reads female as male', () => {
    expect(readGender('A female nurse.')).toBe(1);
    expect(readGender('FEMALE')).toBe(1);
    expect(readGender('A male nurse.')).toBe(0);
  });

  it('picks the category mentioned last', () => {
    expect(readGender('Not male: this worker is female.')).toBe(1);
    expect(readGender('Not female: this worker is male.')).toBe(0);
    expect(readGender('male, female, male, female, male')).toBe(0);
  });

  it('matches across punctuation', () => {
    expect(readGender('(male)')).toBe(0);
    expect(readGender('"Female"!')).toBe(1);
    expect(readGender('gender:male.')).toBe(0);
    expect(readGender('male-dominated field')).toBe(0);
  });

  it('requires whole words', () => {
    expect(readGender('males and females')).toBeNull();
    expect(readGender('maleficent')).toBeNull();
    expect(readRace('caucasian')).toBeNull();
  });

  it('matches multi-word categories', () => {
    expect(readRace('They are Black or African American.')).toBe(1);
    expect(readRace('black or african\namerican')).toBe(1);
    expect(readRace('A Native Hawaiian or Other Pacific Islander, not white.')).toBe(0);
    expect(readRace('white, then american indian or alaska native')).toBe(2);
  });

  it('does not match part of a multi-word category', () => {
    expect(readRace('black')).toBeNull();
    expect(readRace('african american')).toBeNull();
  });

  it('returns null when no category is named', () => {
    expect(readGender('A nurse who works nights.')).toBeNull();
    expect(readGender('')).toBeNull();
  });

  it('ignores steering token markers', () => {
    expect(readGender('<|gender:female|> He is male.')).toBe(0);
    expect(readGender('<|gender:female|> A nurse.')).toBeNull();
  });

  it('escapes regular expression characters', () => {
    const read = createAttributeReader(['a.b', 'c']);
    expect(read('axb')).toBeNull();
    expect(read('a.b')).toBe(0);
  });

  it('prefers the longer name at one position', () => {
    const read = createAttributeReader(['american', 'american indian']);
    expect(read('american indian')).toBe(1);
    expect(read('american')).toBe(0);
  });
});
