import { exchangedTokenDates } from '../../server/grants/token-exchange.js';

/**
 * Issue 14: an exchanged token never outlives the token it was exchanged from. The lifetime is worked out before the
 * new grant is written and the token is dated after: a second that ticks in between must not move the end later.
 */
describe('the dates of an exchanged token', () => {
  const subjectExp = 1_000_300;

  test('a second that ticks before the token is dated does not move its end past the subject token', () => {
    // Lifetime computed at 1_000_000 as subjectExp - now = 300; the token is dated one second later.
    expect(exchangedTokenDates(1_000_001, 300, [subjectExp])).toEqual({ iat: 1_000_001, exp: subjectExp });
  });

  test('the tier lifetime applies when every ceiling is later', () => {
    expect(exchangedTokenDates(1_000_000, 60, [subjectExp, undefined, 1_000_090])).toEqual({ iat: 1_000_000, exp: 1_000_060 });
  });

  test('the earliest of the subject token, its grant and the new grant ends the token', () => {
    expect(exchangedTokenDates(1_000_000, 300, [subjectExp, 1_000_200, 1_000_250])).toEqual({ iat: 1_000_000, exp: 1_000_200 });
    expect(exchangedTokenDates(1_000_000, 300, [subjectExp, undefined, 1_000_100])).toEqual({ iat: 1_000_000, exp: 1_000_100 });
  });

  test('nothing is issued once a ceiling has passed by the time the token is dated', () => {
    expect(exchangedTokenDates(subjectExp, 1, [subjectExp])).toBeUndefined();
    expect(exchangedTokenDates(subjectExp + 5, 1, [subjectExp])).toBeUndefined();
  });
});
